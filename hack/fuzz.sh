#!/usr/bin/env bash
# Fuzzing: builds the cargo-fuzz targets of fuzz/ and runs each in turn for SECONDS (default 60), one
# process at a time under `nice -n 19`, then prints per target the executions, the coverage reached
# and the crashes found. Exits non-zero when a target crashed, timed out or ran out of memory.
#
#   hack/fuzz.sh [SECONDS] [TARGET...]     e.g. hack/fuzz.sh 600, or hack/fuzz.sh 20 glob condition
#
# Needs a nightly toolchain (libFuzzer's coverage instrumentation); installs cargo-fuzz from crates.io
# into $OAM_TRUST_CACHE/cargo-fuzz (default ~/.cache/oam-trust) when missing. Each target reads its
# committed seeds (fuzz/seeds/<target>/) and grows a working corpus in fuzz/corpus/<target>/; crashing
# inputs land in fuzz/artifacts/<target>/ and libFuzzer's output in fuzz/logs/<target>.log (all three
# ignored by git). The build goes to fuzz/target/ (about 2.6 GB), or to $OAM_TRUST_FUZZ_TARGET_DIR.
# Reproduce a crash with
#   cargo +nightly fuzz run --sanitizer none --release <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { echo "[fuzz] $*" >&2; }

seconds="${1:-60}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || (( seconds < 1 )); then
  echo "usage: hack/fuzz.sh [SECONDS] [TARGET...]" >&2
  exit 2
fi

CACHE="${OAM_TRUST_CACHE:-$HOME/.cache/oam-trust}"
FUZZ_ROOT="$CACHE/cargo-fuzz"
export PATH="$FUZZ_ROOT/bin:$PATH"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  log "installing the nightly toolchain (libFuzzer needs -Zsanitizer/-Cpasses=sancov)"
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  log "installing cargo-fuzz into $FUZZ_ROOT"
  nice -n 19 cargo install --locked --root "$FUZZ_ROOT" cargo-fuzz
fi

# No sanitizer: the code under test is safe Rust, so AddressSanitizer would only halve the rate;
# panics, aborts, stack overflows, timeouts and out-of-memory are what libFuzzer reports.
target_dir="${OAM_TRUST_FUZZ_TARGET_DIR:-$ROOT/fuzz/target}"
fuzz=(cargo +nightly fuzz)
build_flags=(--sanitizer none --release --target-dir "$target_dir")

if (( $# > 0 )); then
  targets=("$@")
else
  mapfile -t targets < <("${fuzz[@]}" list)
fi

# One build of every target; then the binaries run directly (`cargo fuzz run` would rebuild first).
# OAM_TRUST_FUZZ_PREBUILT=1 runs the binaries of an earlier build as they are.
if [[ "${OAM_TRUST_FUZZ_PREBUILT:-}" != 1 ]]; then
  log "building ${targets[*]}"
  nice -n 19 "${fuzz[@]}" build "${build_flags[@]}"
fi
bin_dir="$target_dir/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"

# Largest input per target: a condition with its claims or a set of manifests fits in 20 KB.
max_len() {
  case "$1" in
    glob | exchange_limits) echo 4096 ;;
    *) echo 20000 ;;
  esac
}

mkdir -p fuzz/logs
summary=()
failed=0
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  artifacts="fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts" "fuzz/seeds/$t"
  before=$(find "$artifacts" -type f | wc -l)
  log "$t: ${seconds}s (log: fuzz/logs/$t.log)"
  rc=0
  started=$SECONDS
  # libFuzzer writes new inputs only to the first corpus directory; the seeds are read, never changed.
  nice -n 19 "$bin_dir/$t" "$corpus" "fuzz/seeds/$t" \
    -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    -max_len="$(max_len "$t")" -artifact_prefix="$artifacts/" \
    >"fuzz/logs/$t.log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "fuzz/logs/$t.log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "fuzz/logs/$t.log" | tail -1)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*' "fuzz/logs/$t.log" | tail -1 || true)
  ran=$(( SECONDS - started ))  # less than asked when it stopped on a crash
  found=$(( $(find "$artifacts" -type f | wc -l) - before ))
  if (( rc != 0 || found > 0 )); then
    failed=1
    log "$t: FAILED (exit $rc); see fuzz/logs/$t.log and $artifacts/"
    grep -m 3 -E 'panicked at|ERROR: libFuzzer|SUMMARY' "fuzz/logs/$t.log" >&2 || true
  fi
  summary+=("$(printf '%-16s %8ss %12s %8s/s   %-32s %s' "$t" "$ran" "${execs:-?}" "${rate:-?}" \
    "${cov:-?}" "$found")")
done

printf '%-16s %9s %12s %10s   %-32s %s\n' target time executions rate coverage crashes
printf '%s\n' "${summary[@]}"
exit "$failed"
