#!/usr/bin/env bash
# The test command (README): formatting, lints, every test, and the Helm chart checks.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
# Benchmarks must keep compiling; running them is `cargo bench` (numbers in the README).
cargo bench --locked --no-run

if [ -n "${HELM:-}" ] || command -v helm >/dev/null 2>&1; then
  bash hack/helm-check.sh
elif [ "${REQUIRE_HELM:-0}" = 1 ]; then
  echo "helm not found (set HELM=/path/to/helm)" >&2
  exit 1
else
  echo "SKIP helm checks: no helm binary (set HELM=/path/to/helm; .ci/run installs one)"
fi
