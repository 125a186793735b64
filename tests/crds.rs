//! The committed CRDs (`crds/` and the chart's copy) must equal what the Rust types generate.
//! Regenerate with `cargo run -- crds --out-dir crds && bash hack/sync-crds.sh`.

use std::path::Path;

fn check_dir(dir: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, generated) in rebalancer::api::crd_files() {
        let path = root.join(dir).join(&name);
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `cargo run -- crds --out-dir crds`",
                path.display()
            )
        });
        assert!(
            committed == generated,
            "{} drifted from src/api; run `cargo run -- crds --out-dir crds && bash hack/sync-crds.sh`",
            path.display()
        );
    }
}

#[test]
fn crds_dir_matches_the_types() {
    check_dir("crds");
}

#[test]
fn chart_crds_match_the_types() {
    check_dir("charts/rebalancer/crds");
}

#[test]
fn crds_command_prints_both_kinds() {
    let all = rebalancer::api::crds_yaml();
    assert!(all.contains("name: topics.rebalancer.dev"));
    assert!(all.contains("name: consumergroups.rebalancer.dev"));
    assert_eq!(
        all.matches("\n---\n").count() + usize::from(all.starts_with("---\n")),
        2
    );
}
