//! Command line: `rebalancer run | plan | crds`.

pub mod crds;
pub mod load;
pub mod nesting;
pub mod plan;
pub mod route;
pub mod run;

use std::io::Write;
use std::panic::Location;

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
    install_panic_hook();
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

/// Errors are returned, not panicked; this is the safety net for a bug (or a dependency's panic),
/// so that it still ends as one `error:` line and exit code 1, never a backtrace. Exiting here
/// also stops a panic in a background task from leaving a half-running operator.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = (payload.downcast_ref::<&str>().copied())
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
        let line = panic_line(message, info.location());
        // Not `eprintln!`: a panic while printing would abort here.
        let _ = writeln!(std::io::stderr(), "{line}");
        std::process::exit(1);
    }));
}

/// The one line printed for a panic.
fn panic_line(message: Option<&str>, location: Option<&Location<'_>>) -> String {
    let message = message.unwrap_or("panic with a non-string payload");
    let mut line = format!("error: internal error: {message}");
    if let Some(l) = location {
        line.push_str(&format!(" at {l}"));
    }
    line.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_one_line_with_its_location() {
        let here = Location::caller();
        assert_eq!(
            panic_line(Some("index out of bounds:\nlen is 0"), Some(here)),
            format!(
                "error: internal error: index out of bounds: len is 0 at src/cli/mod.rs:{}:{}",
                here.line(),
                here.column()
            )
        );
        assert_eq!(
            panic_line(None, None),
            "error: internal error: panic with a non-string payload"
        );
    }
}
