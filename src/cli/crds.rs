//! `rebalancer crds`.

use std::path::PathBuf;

/// Arguments of `rebalancer crds`.
#[derive(clap::Args, Debug)]
pub struct CrdsArgs {
    /// Write `<plural>.rebalancer.dev.yaml` files into this directory instead of printing.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

/// Prints or writes the CRDs.
pub fn run(args: &CrdsArgs) -> Result<(), String> {
    match &args.out_dir {
        None => {
            print!("{}", crate::api::crds_yaml());
            Ok(())
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for (name, yaml) in crate::api::crd_files() {
                let path = dir.join(name);
                std::fs::write(&path, yaml).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            Ok(())
        }
    }
}
