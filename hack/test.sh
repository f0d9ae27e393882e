#!/usr/bin/env bash
# The test command: formatting and lint gates (Rust and shell), the local control plane, then every test.
# Starts its own control plane in $OAM_TRUST_TEST_CLUSTER_DIR (default: .cluster-test/ in the checkout,
# never the demo's .cluster/), fresh on every run, and stops it at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { echo "[test] $*" >&2; }

"$ROOT/hack/prerequisites.sh"

log "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

# Every shell script of the project: hack/*.sh, the other scripts under hack/ (by shebang), and CI's.
shebang='^#!.*[/ ](ba)?sh([[:space:]]|$)'
scripts=()
for f in hack/* .ci/run; do
  [[ -f "$f" ]] || continue
  first=""; IFS= read -r first <"$f" || true
  if [[ "$f" == *.sh || "$first" =~ $shebang ]]; then scripts+=("$f"); fi
done
log "bash -n and shellcheck: ${scripts[*]}"
for f in "${scripts[@]}"; do bash -n "$f"; done
shellcheck "${scripts[@]}"  # settings: .shellcheckrc

# Its own cluster directory, so a demo's control plane (.cluster/, or an exported OAM_TRUST_CLUSTER_DIR)
# is never reused nor stopped by the tests.
export OAM_TRUST_CLUSTER_DIR="${OAM_TRUST_TEST_CLUSTER_DIR:-$ROOT/.cluster-test}"
cleanup() {
  local rc=$?
  if (( rc != 0 )); then hack/cluster.sh logs || true; fi
  hack/cluster.sh down >/dev/null 2>&1 || true
  # tests/faults.rs runs a control plane of its own beside this one and stops it itself; if the run
  # was killed first, this stops it.
  OAM_TRUST_CLUSTER_DIR="$OAM_TRUST_CLUSTER_DIR-faults" hack/cluster.sh down >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT
# Fresh state: a run that was killed before its cleanup must not leave objects to the next one.
hack/cluster.sh down >/dev/null 2>&1
hack/cluster.sh up >/dev/null
export OAM_TRUST_TEST_KUBECONFIG="$OAM_TRUST_CLUSTER_DIR/kubeconfig"
# shellcheck source=/dev/null  # written by hack/cluster.sh up
source "$OAM_TRUST_CLUSTER_DIR/env"

log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

# The fuzz targets (their own workspace) must keep compiling; running them is hack/fuzz.sh, not CI.
# About 15 s on a warm cache (the first run on a machine checks its dependencies: ~3.5 min).
log "cargo check of the fuzz targets"
cargo check --quiet --locked --manifest-path fuzz/Cargo.toml

log "cargo test"
cargo test --no-fail-fast "$@" 2>&1
