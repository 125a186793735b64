#!/usr/bin/env bash
# Keep the chart's copies of the CRDs identical to the generated ones.
#
#   hack/sync-crds.sh           copy crds/*.yaml into charts/rebalancer/crds/
#                               (and delete chart CRD files with no source)
#   hack/sync-crds.sh --check   change nothing; exit 1 with a diff when the
#                               chart's copies differ from crds/ (used by CI)
#
# crds/*.yaml is produced by `cargo run -- crds --out-dir crds`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC_REL="crds"
DST_REL="charts/rebalancer/crds"
SRC="$ROOT/$SRC_REL"
DST="$ROOT/$DST_REL"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  -h | --help) usage; exit 0 ;;
  *) echo "error: unknown argument: $1" >&2; usage >&2; exit 2 ;;
esac

shopt -s nullglob
src_files=("$SRC"/*.yaml)
if ((${#src_files[@]} == 0)); then
  echo "error: no CRD files in $SRC_REL/*.yaml; generate them first: cargo run -- crds --out-dir crds" >&2
  exit 1
fi

if ! $check; then
  mkdir -p "$DST"
  for f in "${src_files[@]}"; do
    cp -f "$f" "$DST/$(basename "$f")"
  done
  for f in "$DST"/*.yaml "$DST"/*.yml "$DST"/*.json; do
    if [[ ! -f "$SRC/$(basename "$f")" ]]; then
      echo "removing stale $DST_REL/$(basename "$f")"
      rm -f "$f"
    fi
  done
  echo "synced ${#src_files[@]} CRD file(s) from $SRC_REL/ to $DST_REL/"
  exit 0
fi

status=0
for f in "${src_files[@]}"; do
  name="$(basename "$f")"
  if [[ ! -f "$DST/$name" ]]; then
    echo "missing: $DST_REL/$name (copy of $SRC_REL/$name)"
    status=1
  elif ! diff -u --label "$DST_REL/$name" --label "$SRC_REL/$name" "$DST/$name" "$f"; then
    status=1
  fi
done
# Helm installs every .yaml/.yml/.json file under crds/: none may be stale.
for f in "$DST"/*.yaml "$DST"/*.yml "$DST"/*.json; do
  name="$(basename "$f")"
  if [[ ! -f "$SRC/$name" ]]; then
    echo "stale: $DST_REL/$name has no source in $SRC_REL/"
    status=1
  fi
done

if ((status != 0)); then
  echo "error: $DST_REL/ is out of date with $SRC_REL/; run hack/sync-crds.sh" >&2
  exit 1
fi
echo "ok: $DST_REL/ matches $SRC_REL/ (${#src_files[@]} file(s))"
