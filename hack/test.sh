#!/usr/bin/env bash
# The test command: formatting and lint gates (Rust and shell), the local control plane, then every test.
# Starts the control plane itself (building its binaries on first use) and stops it at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { echo "[test] $*" >&2; }

"$ROOT/hack/prerequisites.sh"

log "cargo fmt --check"
cargo fmt --all -- --check

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

export OAM_TRUST_CLUSTER_DIR="${OAM_TRUST_CLUSTER_DIR:-$ROOT/.cluster}"
cleanup() {
  local rc=$?
  if (( rc != 0 )); then hack/cluster.sh logs || true; fi
  hack/cluster.sh down >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT
hack/cluster.sh up >/dev/null
export OAM_TRUST_TEST_KUBECONFIG="$OAM_TRUST_CLUSTER_DIR/kubeconfig"
# shellcheck source=/dev/null  # written by hack/cluster.sh up
source "$OAM_TRUST_CLUSTER_DIR/env"

log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

log "cargo test"
cargo test --no-fail-fast "$@" 2>&1
