fn main() {
    std::process::exit(rebalancer::cli::main());
}
