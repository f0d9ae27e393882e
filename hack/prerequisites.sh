#!/usr/bin/env bash
# Installs what the scripts need on a fresh Debian machine (openssl, curl, python3, shellcheck for the
# test command's script lint) and the Rust components (rustfmt, clippy). Does nothing when all are present.
set -euo pipefail
missing=()
for t in openssl curl python3 setsid flock shellcheck; do command -v "$t" >/dev/null || missing+=("$t"); done
if (( ${#missing[@]} )); then
  echo "[prerequisites] installing: ${missing[*]}" >&2
  pkgs=()
  for t in "${missing[@]}"; do case "$t" in setsid|flock) pkgs+=(util-linux) ;; *) pkgs+=("$t") ;; esac; done
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "[prerequisites] Go 1.26+ is required to build the control plane (https://go.dev/doc/install)" >&2; exit 1; }
if command -v rustup >/dev/null; then
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt >&2
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy >&2
fi
