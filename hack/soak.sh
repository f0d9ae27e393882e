#!/usr/bin/env bash
# Soak of the token exchange: `oam-trust run` (the operator binary, exchange on TLS) as a child
# process, CLIENTS concurrent clients exchanging fresh ID tokens for SECONDS after a 30 s warm-up,
# on the local control plane. Prints every 60 s the exchanges, errors, the operator's resident
# memory (VmRSS) and CPU time and how many TokenIssuance records exist, then the totals and p50/p99,
# and waits until the records drain. Exits non-zero on any error. See benches/exchange_load.rs.
#   hack/soak.sh [SECONDS] [CLIENTS]          # default 600 s, 50 clients
#   OAM_TRUST_SOAK_SAMPLE_SECONDS=30 OAM_TRUST_SOAK_DRAIN=0 hack/soak.sh 120 20
set -euo pipefail
cd "$(dirname "$0")/.."
export OAM_TRUST_TEST_KUBECONFIG="${OAM_TRUST_TEST_KUBECONFIG:-${OAM_TRUST_CLUSTER_DIR:-$PWD/.cluster}/kubeconfig}"
export OAM_TRUST_LOAD_MODE=soak
export OAM_TRUST_LOAD_SECONDS="${1:-600}"
export OAM_TRUST_LOAD_CLIENTS="${2:-50}"
exec cargo bench --bench exchange_load
