//! Command line: `rebalancer run | plan | crds`.

pub mod crds;
pub mod load;
pub mod plan;
pub mod run;

use clap::{Parser, Subcommand};

/// rebalancer: assigns Apache RocketMQ queues to consumer pods.
#[derive(Parser, Debug)]
#[command(name = "rebalancer", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the operator.
    Run(run::RunArgs),
    /// Compute a group's assignment offline from Topic and ConsumerGroup YAML files.
    Plan(plan::PlanArgs),
    /// Print the CustomResourceDefinitions (or write one file per kind with --out-dir).
    Crds(crds::CrdsArgs),
}

/// Parses the command line and runs it; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Crds(args) => crds::run(&args),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
