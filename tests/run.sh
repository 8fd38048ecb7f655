#!/usr/bin/env bash
# Run the whole test suite: install what the tests need, build the binaries the black-box
# tests start, then run every test in the workspace.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The partition tests cut nodes off with iptables; the VIP tests and the lab build network
# namespaces with iproute2; the systemd-unit test boots a private systemd in namespaces of its
# own (util-linux's unshare and nsenter). All need root. The HTTPS monitor test makes its
# certificates with openssl. The database tests start real MariaDB servers. The console test
# drives the web console in headless Chromium through chromedriver. The build needs libclang.
missing=()
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
[ -x /lib/systemd/systemd ] || missing+=(systemd)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
# The embedded database's SQLite bindings are generated at build time (bindgen needs libclang).
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing ${missing[*]} (needed by the build and the partition, VIP, lab, systemd, HTTPS monitor, database and console tests)..."
    # Packages are not to start their own services here (the database tests start their own
    # servers): a policy that denies service starts, for the length of the install only.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' > "$policy"
      chmod +x "$policy"
      trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    if trap -p EXIT | grep -q policy; then
      rm -f "$policy"
      trap - EXIT
    fi
  else
    echo "error: ${missing[*]} not installed; run this script as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "error: the partition, VIP and lab tests need root (network namespaces, iptables); run as root" >&2
  exit 1
fi

# A clean build of the suite (both workspaces) takes about 3 GB; say so before a linker runs out.
free_mb=$(df -Pm "${CARGO_TARGET_DIR:-.}" 2>/dev/null | awk 'NR==2 {print $4}')
if [ -n "$free_mb" ] && [ "$free_mb" -lt 4096 ]; then
  echo "warning: only ${free_mb} MB free for the build; a clean build of the suite needs about 3 GB" >&2
fi

cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"
# The deterministic simulator is a workspace of its own (it builds with --cfg tokio_unstable,
# kept out of the binaries above): the CI seed set, the scenarios, the mutants.
(cd simulation && cargo test --locked "$@")
