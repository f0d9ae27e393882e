#!/usr/bin/env bash
# Converge time and API-server cost against the number of Applications, the operator beside a
# plain server-side-apply loop of the same objects (benches/converge.rs), then the plot in the README.
#   hack/bench-converge.sh                 # 100 250 500 1000 Applications, two runs each
#   hack/bench-converge.sh 500             # one size
#   OAM_TRUST_BENCH_RUNS=1 hack/bench-converge.sh 100 250
# Writes target/converge.csv and docs/converge.png. Uses OAM_TRUST_TEST_KUBECONFIG's cluster, or
# starts hack/cluster.sh up. matplotlib is installed into ~/.cache/oam-trust/venv-plot when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -eq 0 ]; then set -- 100 250 500 1000; fi
sizes=$(IFS=,; echo "$*")
venv="${XDG_CACHE_HOME:-$HOME/.cache}/oam-trust/venv-plot"
if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet matplotlib
fi
mkdir -p target docs
csv="$PWD/target/converge.csv"
OAM_TRUST_BENCH_APPS="$sizes" OAM_TRUST_BENCH_RUNS="${OAM_TRUST_BENCH_RUNS:-2}" \
  OAM_TRUST_BENCH_CSV="$csv" cargo bench --bench converge
"$venv/bin/python" hack/plot-converge.py "$csv" docs/converge.png
