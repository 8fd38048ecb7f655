#!/usr/bin/env bash
# Run the whole test suite: install what the tests need, build the binaries the black-box
# tests start, then run every test in the workspace.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The pre-vote test cuts a node off with iptables (root needed).
if ! command -v iptables >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing iptables (needed by the partition tests)..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null
  else
    echo "error: iptables is not installed; run this script as root, or install it: sudo apt-get install iptables" >&2
    exit 1
  fi
fi

cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"
