#!/usr/bin/env bash
# Install Tandem on three machines: make the cluster's certificates, secrets and configs on one
# workstation, then install one archive on each machine.
#
#   install.sh bundle --out DIR --cluster-name NAME --node SPEC --node SPEC --node SPEC
#                     [--admin-public] [--force]
#   install.sh node --bundle FILE.tar.gz [--bin-dir DIR] [--root DIR] [--no-systemd]
#                   [--unit FILE] [--force]
#   install.sh help
#
# bundle (on a workstation, with openssl): makes in DIR
#   ca.crt, ca.key       the cluster CA (EC P-256, 10 years). ca.key signs the node
#                        certificates and is in no archive: keep it offline.
#   cluster.secret       the peers' shared secret (32 random bytes, hex)
#   admin.token          admin API token, scope "admin" (every request)
#   read.token           admin API token, scope "read" (read-only requests)
#   NAME.tar.gz          one archive per node with only what that node needs: tandem.toml,
#                        cluster.secret, tls/ (ca.crt and the node's own node.crt and
#                        node.key) and tokens/ (admin.token, read.token)
#   SPEC is ID:NAME:ROLE:PEER_ADDR:ADMIN_ADDR[:HEALTH_LISTEN], three of them: two ROLE "data",
#   one "witness". Addresses are host:port (IPv6 as [addr]:port); PEER_ADDR and ADMIN_ADDR are
#   what the other machines use to reach the node, and go into its certificate with 127.0.0.1
#   and localhost. An IP there is also what the node binds (a DNS name binds 0.0.0.0).
#   HEALTH_LISTEN (data nodes; default 0.0.0.0:7490) serves /health/* in plain HTTP for load
#   balancers. The admin API listens on 127.0.0.1 at ADMIN_ADDR's port, unless
#   --admin-public: then on ADMIN_ADDR itself (TLS and the tokens guard it), so that tandemctl
#   and the console can reach every node's admin API from elsewhere. (The members read each
#   other's status and events over the peer port either way.)
#   An existing bundle in DIR is never replaced without --force; with --force the node keys,
#   certificates, configs and archives are made again, and the CA, secret and tokens already in
#   DIR are kept (delete them, or use a new DIR, to replace them).
#
# node (on each machine, as root): installs
#   tandem, tandemctl    from --bin-dir (default: target/release of this repository if built,
#                        else the directory of this script) into ROOT/usr/local/bin
#   the archive          into ROOT/etc/tandem (key, secret and tokens 0600, owned by root)
#   ROOT/var/lib/tandem  the data directory (0700)
#   tandem.service       from --unit (default: systemd/tandem.service next to this script) into
#                        ROOT/etc/systemd/system, and docs/operations.md, when it is found
#                        beside the script, into ROOT/usr/local/share/doc/tandem
#   then checks the config with `tandem config check` and, when ROOT is / and --no-systemd is
#   not given, runs `systemctl daemon-reload` and `systemctl enable --now --no-block tandem`
#   (the unit stays "activating" until the cluster is initialized).
#   --root DIR (default /) installs under DIR, e.g. to try an install out: data_dir and the
#   file paths in the installed tandem.toml are then rewritten to lie under DIR, so that
#   `DIR/usr/local/bin/tandem run --config DIR/etc/tandem/tandem.toml` runs from there;
#   systemctl is not run.
#   Running it again is safe: identical files are left alone; a file in ROOT/etc/tandem that
#   differs from the archive's is not replaced without --force.
#
# After the three machines run tandem: `tandem init --config /etc/tandem/tandem.toml` on one data
# node, then `tandemctl status`. See docs/operations.md, "Installing on three VMs".
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Files of a node's archive, and their modes once installed.
bundle_files=(tandem.toml cluster.secret tls/ca.crt tls/node.crt tls/node.key tokens/admin.token tokens/read.token)
declare -A file_mode=(
  [tandem.toml]=0640 [cluster.secret]=0600 [tls/ca.crt]=0644 [tls/node.crt]=0644
  [tls/node.key]=0600 [tokens/admin.token]=0600 [tokens/read.token]=0600
)
# Directories of /etc/tandem, and their modes.
declare -A dir_mode=([.]=0750 [tls]=0750 [tokens]=0700)
default_health_listen=0.0.0.0:7490
validity_days=3650

die() { echo "error: $*" >&2; exit 1; }
usage_error() { echo "error: $*" >&2; echo "Run '$0 help' for the usage." >&2; exit 2; }
usage() { sed -n '2,/^set -euo pipefail$/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is not installed; it is needed to $2: apt-get install $3"
}

# --- addresses --------------------------------------------------------------------------------

is_ipv4() {
  local ip=$1 part parts
  [[ $ip =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || return 1
  IFS=. read -r -a parts <<<"$ip"
  for part in "${parts[@]}"; do [ "$((10#$part))" -le 255 ] || return 1; done
}
is_ipv6() { [[ $1 =~ ^[0-9A-Fa-f:.]+$ && $1 == *:* ]]; }
# A name of letters, digits, '.' and '-' that is not all digits and dots (a mistyped IPv4).
is_dns_name() { [[ $1 =~ ^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$ && ! $1 =~ ^[0-9.]+$ ]]; }
is_port() { [[ $1 =~ ^[0-9]{1,5}$ ]] && [ "$((10#$1))" -ge 1 ] && [ "$((10#$1))" -le 65535 ]; }

# Split "host:port" or "[v6]:port" off the front of $rest: sets addr_host (without brackets),
# addr_port and addr (as written); leaves the remainder (after a ':') in rest.
take_addr() {
  local what=$1 spec=$2
  if [[ $rest =~ ^\[([^]]*)\]:([0-9]+)(:(.*))?$ ]]; then
    addr_host=${BASH_REMATCH[1]}; addr_port=${BASH_REMATCH[2]}; rest=${BASH_REMATCH[4]}
    addr="[$addr_host]:$addr_port"
    is_ipv6 "$addr_host" || usage_error "--node $spec: $what [$addr_host] is not an IPv6 address"
  elif [[ $rest =~ ^([^]:[]+):([0-9]+)(:(.*))?$ ]]; then
    addr_host=${BASH_REMATCH[1]}; addr_port=${BASH_REMATCH[2]}; rest=${BASH_REMATCH[4]}
    addr="$addr_host:$addr_port"
    is_ipv4 "$addr_host" || is_dns_name "$addr_host" ||
      usage_error "--node $spec: $what host '$addr_host' is neither an IPv4 address nor a DNS name"
  else
    usage_error "--node $spec: $what must be host:port (IPv6 as [addr]:port), e.g. 10.0.0.1:7001"
  fi
  is_port "$addr_port" || usage_error "--node $spec: $what port $addr_port is not between 1 and 65535"
}

is_ip() { is_ipv4 "$1" || is_ipv6 "$1"; }
# host:port to bind for an address others reach the node at: the IP itself, or all IPv4
# addresses for a DNS name.
bind_addr() { if is_ip "$1"; then echo "$3"; else echo "0.0.0.0:$2"; fi; }

# --- bundle -----------------------------------------------------------------------------------

cmd_bundle() {
  local out="" cluster="" admin_public=0 force=0 specs=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --out) out=${2:?--out needs a directory}; shift 2 ;;
      --cluster-name) cluster=${2:?--cluster-name needs a name}; shift 2 ;;
      --node) specs+=("${2:?--node needs ID:NAME:ROLE:PEER_ADDR:ADMIN_ADDR}"); shift 2 ;;
      --admin-public) admin_public=1; shift ;;
      --force) force=1; shift ;;
      -h|--help) usage; exit 0 ;;
      *) usage_error "bundle: unknown argument '$1'" ;;
    esac
  done
  [ -n "$out" ] || usage_error "bundle: --out DIR is missing (the directory the archives are written to)"
  [ -n "$cluster" ] || usage_error "bundle: --cluster-name NAME is missing (e.g. --cluster-name prod)"
  [[ $cluster =~ ^[A-Za-z0-9_-]{1,64}$ ]] ||
    usage_error "bundle: --cluster-name '$cluster' must be 1-64 letters, digits, '-' or '_'"
  [ "${#specs[@]}" -eq 3 ] ||
    usage_error "bundle: a Tandem cluster has three nodes (two data nodes and a witness): give --node three times, found ${#specs[@]}"
  need openssl "make the CA, keys and certificates" openssl
  need tar "pack the archives" tar

  # Parse and check the three nodes.
  local ids=() names=() roles=() peers=() admins=() peer_hosts=() admin_hosts=()
  local peer_binds=() admin_binds=() healths=() sans=()
  local spec id name role health all_addrs=" " data=0 witness=0
  for spec in "${specs[@]}"; do
    IFS=: read -r id name role rest <<<"$spec"
    [[ ${id:-} =~ ^[1-9][0-9]{0,18}$ ]] || usage_error "--node $spec: ID '${id:-}' must be a positive integer"
    [[ ${name:-} =~ ^[A-Za-z0-9_-]{1,64}$ ]] ||
      usage_error "--node $spec: NAME '${name:-}' must be 1-64 letters, digits, '-' or '_'"
    case "${role:-}" in
      data) data=$((data + 1)) ;;
      witness) witness=$((witness + 1)) ;;
      *) usage_error "--node $spec: ROLE '${role:-}' must be data or witness" ;;
    esac
    [ -n "${rest:-}" ] || usage_error "--node $spec: PEER_ADDR and ADMIN_ADDR are missing (ID:NAME:ROLE:PEER_ADDR:ADMIN_ADDR)"
    take_addr PEER_ADDR "$spec"
    local peer=$addr peer_host=$addr_host peer_bind
    peer_bind=$(bind_addr "$addr_host" "$addr_port" "$addr")
    [ -n "$rest" ] || usage_error "--node $spec: ADMIN_ADDR is missing (ID:NAME:ROLE:PEER_ADDR:ADMIN_ADDR)"
    take_addr ADMIN_ADDR "$spec"
    local admin=$addr admin_host=$addr_host admin_bind
    if [ "$admin_public" = 1 ]; then
      admin_bind=$(bind_addr "$addr_host" "$addr_port" "$addr")
    else
      admin_bind="127.0.0.1:$addr_port"
    fi
    health=""
    if [ "$role" = data ]; then health=$default_health_listen; fi
    if [ -n "$rest" ]; then
      [ "$role" = data ] || usage_error "--node $spec: only data nodes serve the health listener; drop HEALTH_LISTEN from the witness"
      take_addr HEALTH_LISTEN "$spec"
      is_ip "$addr_host" || usage_error "--node $spec: HEALTH_LISTEN must be an IP address with a port, e.g. 0.0.0.0:7490"
      [ -z "$rest" ] || usage_error "--node $spec: too many fields after HEALTH_LISTEN (ID:NAME:ROLE:PEER_ADDR:ADMIN_ADDR[:HEALTH_LISTEN])"
      health=$addr
    fi
    [ "$peer" != "$admin" ] || usage_error "--node $spec: PEER_ADDR and ADMIN_ADDR must differ"
    local other
    for other in "${ids[@]}"; do [ "$other" != "$id" ] || usage_error "--node $spec: ID $id is used twice; every node needs its own"; done
    for other in "${names[@]}"; do [ "$other" != "$name" ] || usage_error "--node $spec: NAME $name is used twice"; done
    for other in "$peer" "$admin"; do
      [[ $all_addrs != *" $other "* ]] || usage_error "--node $spec: address $other is used twice among the nodes"
      all_addrs+="$other "
    done
    # The certificate's names: its addresses, and loopback for tools on the machine itself.
    local san="" h ip=1 dns=1 seen=" "
    for h in "$peer_host" "$admin_host" 127.0.0.1 localhost; do
      [[ $seen != *" $h "* ]] || continue
      seen+="$h "
      if is_ip "$h"; then san+="IP.$ip = $h"$'\n'; ip=$((ip + 1)); else san+="DNS.$dns = $h"$'\n'; dns=$((dns + 1)); fi
    done
    ids+=("$id"); names+=("$name"); roles+=("$role"); peers+=("$peer"); admins+=("$admin")
    peer_hosts+=("$peer_host"); admin_hosts+=("$admin_host"); peer_binds+=("$peer_bind")
    admin_binds+=("$admin_bind"); healths+=("$health"); sans+=("$san")
  done
  { [ "$data" -eq 2 ] && [ "$witness" -eq 1 ]; } ||
    usage_error "bundle: the three nodes must be two with ROLE data and one with ROLE witness (found $data data, $witness witness)"

  # Never replace an existing bundle by accident.
  if [ ! -d "$out" ]; then mkdir -p "$out" && chmod 0700 "$out"; fi
  out=$(cd "$out" && pwd)
  local existing=() f
  for f in ca.crt ca.key cluster.secret admin.token read.token; do
    [ ! -e "$out/$f" ] || existing+=("$f")
  done
  for name in "${names[@]}"; do [ ! -e "$out/$name.tar.gz" ] || existing+=("$name.tar.gz"); done
  if [ "${#existing[@]}" -gt 0 ] && [ "$force" = 0 ]; then
    die "$out already holds a bundle (${existing[*]}); nothing was changed. Add --force to make new node keys, certificates, configs and archives with the CA, secret and tokens already there, or give an empty --out directory to start over."
  fi
  if [ -e "$out/ca.crt" ] || [ -e "$out/ca.key" ]; then
    { [ -e "$out/ca.crt" ] && [ -e "$out/ca.key" ]; } ||
      die "$out has only one of ca.crt and ca.key; put the other one back, or remove both to make a new CA (every node then needs its new archive)"
    [ "$(openssl pkey -in "$out/ca.key" -pubout 2>/dev/null)" = "$(openssl x509 -in "$out/ca.crt" -noout -pubkey 2>/dev/null)" ] ||
      die "$out/ca.key is not the key of $out/ca.crt (or one of them cannot be read); restore the matching pair"
  fi

  # Everything is made in a staging directory and moved into place at the end, so a failed run
  # leaves nothing half-written.
  umask 077
  local stage
  stage=$(mktemp -d "$out/.staging.XXXXXX")
  # shellcheck disable=SC2064  # expand now: $stage is local
  trap "rm -rf '$stage'" EXIT
  local ca_crt=$out/ca.crt ca_key=$out/ca.key made=()
  if [ ! -e "$ca_crt" ]; then
    ca_crt=$stage/ca.crt; ca_key=$stage/ca.key
    cat >"$stage/ca.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
O = Tandem cluster $cluster
CN = Tandem CA $cluster
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$ca_key" 2>/dev/null ||
      die "openssl could not make an EC P-256 key; it needs OpenSSL 1.1.1 or later (openssl version)"
    openssl req -new -x509 -sha256 -days "$validity_days" -key "$ca_key" -config "$stage/ca.cnf" \
      -extensions v3_ca -out "$ca_crt" 2>"$stage/err" || die "openssl could not make the CA certificate: $(cat "$stage/err")"
    made+=(ca.crt ca.key)
  fi
  for f in cluster.secret admin.token read.token; do
    if [ ! -e "$out/$f" ]; then
      openssl rand -hex 32 >"$stage/$f"
      made+=("$f")
    fi
  done
  local secret_dir
  secret_file() { if [ -e "$stage/$1" ]; then echo "$stage/$1"; else echo "$out/$1"; fi; }

  # The members list, the same in the three configs.
  local members="" i
  for i in 0 1 2; do
    members+="
[[members]]
id = ${ids[i]}
name = \"${names[i]}\"
role = \"${roles[i]}\"
peer_addr = \"${peers[i]}\"
admin_addr = \"${admins[i]}\"
"
  done

  for i in 0 1 2; do
    name=${names[i]}
    secret_dir=$stage/nodes/$name
    mkdir -p "$secret_dir/tls" "$secret_dir/tokens"
    # The node's key and certificate, for both ends of mutual TLS.
    cat >"$secret_dir/node.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
O = Tandem cluster $cluster
CN = $name
[v3_node]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = @alt
[alt]
${sans[i]}
EOF
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$secret_dir/tls/node.key" 2>/dev/null ||
      die "openssl could not make an EC P-256 key; it needs OpenSSL 1.1.1 or later (openssl version)"
    openssl req -new -sha256 -key "$secret_dir/tls/node.key" -config "$secret_dir/node.cnf" \
      -out "$secret_dir/node.csr" 2>"$stage/err" || die "openssl could not make $name's request: $(cat "$stage/err")"
    openssl x509 -req -sha256 -days "$validity_days" -in "$secret_dir/node.csr" -CA "$ca_crt" -CAkey "$ca_key" \
      -set_serial "0x$(openssl rand -hex 16)" -extfile "$secret_dir/node.cnf" -extensions v3_node \
      -out "$secret_dir/tls/node.crt" 2>"$stage/err" || die "openssl could not sign $name's certificate: $(cat "$stage/err")"
    openssl verify -CAfile "$ca_crt" "$secret_dir/tls/node.crt" >/dev/null 2>"$stage/err" ||
      die "$name's new certificate does not verify against the CA: $(cat "$stage/err")"
    rm -f "$secret_dir/node.cnf" "$secret_dir/node.csr"
    cp "$ca_crt" "$secret_dir/tls/ca.crt"
    cp "$(secret_file cluster.secret)" "$secret_dir/cluster.secret"
    for f in admin.token read.token; do cp "$(secret_file "$f")" "$secret_dir/tokens/$f"; done

    {
      cat <<EOF
# Tandem node "$name" (${roles[i]}) of cluster "$cluster", made by install.sh bundle.
# Installed as /etc/tandem/tandem.toml; every key is described in docs/operations.md.
node_id = ${ids[i]}
cluster_name = "$cluster"
data_dir = "/var/lib/tandem"
peer_listen = "${peer_binds[i]}"
EOF
      if [ "$admin_public" = 1 ]; then
        echo "admin_listen = \"${admin_binds[i]}\""
      else
        echo "# Loopback only: tandemctl on this machine. (install.sh bundle --admin-public opens it.)"
        echo "admin_listen = \"${admin_binds[i]}\""
      fi
      if [ -n "${healths[i]}" ]; then
        echo "# /health/live, /health/active and /health/standby in plain HTTP, for load balancers."
        echo "health_listen = \"${healths[i]}\""
      fi
      cat <<EOF
cluster_secret_file = "/etc/tandem/cluster.secret"

# Mutual TLS between the members (certificates signed by the cluster CA), and on the admin API.
[tls]
ca_file = "/etc/tandem/tls/ca.crt"
cert_file = "/etc/tandem/tls/node.crt"
key_file = "/etc/tandem/tls/node.key"
admin = true

[[admin_tokens]]
name = "admin"
scope = "admin"
token_file = "/etc/tandem/tokens/admin.token"

[[admin_tokens]]
name = "read"
scope = "read"
token_file = "/etc/tandem/tokens/read.token"
$members
EOF
    } >"$secret_dir/tandem.toml"

    for f in "${bundle_files[@]}"; do chmod "${file_mode[$f]}" "$secret_dir/$f"; done
    local owner=()
    if tar --version 2>/dev/null | grep -q 'GNU tar'; then owner=(--owner=0 --group=0 --numeric-owner); fi
    tar "${owner[@]}" -C "$secret_dir" -czf "$stage/$name.tar.gz" "${bundle_files[@]}"
    rm -rf "$secret_dir"
  done

  # Everything made: move it into place.
  for f in "${made[@]}"; do mv -f "$stage/$f" "$out/$f"; done
  chmod 0644 "$out/ca.crt"
  for name in "${names[@]}"; do mv -f "$stage/$name.tar.gz" "$out/$name.tar.gz"; done

  echo "Bundle for cluster \"$cluster\" in $out:"
  for i in 0 1 2; do
    printf '  %-24s node %s (%s), for the machine at %s\n' "${names[i]}.tar.gz" "${names[i]}" "${roles[i]}" "${peer_hosts[i]}"
  done
  # Whether each of the cluster-wide files was made now or kept from an earlier run.
  origin() { if [[ " ${made[*]} " == *" $1 "* ]]; then echo "new"; else echo "kept"; fi; }
  cat <<EOF
  ca.crt, ca.key           the cluster CA ($(origin ca.key)). ca.key is in no archive: move it off
                           this machine to offline storage; it is needed again only to make
                           node certificates (install.sh bundle --force with it back in $out)
  cluster.secret           the peers' shared secret ($(origin cluster.secret); also in each archive)
  admin.token, read.token  admin API tokens, scope admin and read ($(origin admin.token); also in
                           each archive, under tokens/)

Next: copy each archive to its machine, with install.sh and the tandem and tandemctl binaries
(or the release tarball that holds them), and install it there as root:
EOF
  for i in 0 1 2; do
    printf '  %-40s then there: ./install.sh node --bundle %s\n' \
      "scp $out/${names[i]}.tar.gz ${peer_hosts[i]}:" "${names[i]}.tar.gz"
  done
  local first_data
  for i in 0 1 2; do if [ "${roles[i]}" = data ]; then first_data=$i; break; fi; done
  cat <<EOF
Once all three run tandem, on one data node (${names[first_data]}) only, once:
      tandem init --config /etc/tandem/tandem.toml
and see the cluster (install.sh node prints the same for each machine):
      tandemctl --nodes ${admin_binds[first_data]/#0.0.0.0:/127.0.0.1:} --ca-file /etc/tandem/tls/ca.crt --token-file /etc/tandem/tokens/read.token status
EOF
}

# --- node -------------------------------------------------------------------------------------

# The role of the node a tandem.toml describes: the role of the [[members]] entry with its
# node_id.
config_role() {
  awk '
    /^node_id[ \t]*=/ { sub(/^[^=]*=[ \t]*/, ""); me = $0 }
    /^\[\[members\]\]/ { in_m = 1; id = ""; next }
    /^\[/ { in_m = 0 }
    in_m && /^id[ \t]*=/ { sub(/^[^=]*=[ \t]*/, ""); id = $0 }
    in_m && /^role[ \t]*=/ { r = $0; sub(/^[^=]*=[ \t]*"/, "", r); sub(/".*/, "", r); if (id == me) print r }
  ' "$1"
}

cmd_node() {
  local bundle="" bin_dir="" root=/ systemd=1 unit="" force=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --bundle) bundle=${2:?--bundle needs an archive made by install.sh bundle}; shift 2 ;;
      --bin-dir) bin_dir=${2:?--bin-dir needs the directory holding tandem and tandemctl}; shift 2 ;;
      --root) root=${2:?--root needs a directory}; shift 2 ;;
      --no-systemd) systemd=0; shift ;;
      --unit) unit=${2:?--unit needs the path of tandem.service}; shift 2 ;;
      --force) force=1; shift ;;
      -h|--help) usage; exit 0 ;;
      *) usage_error "node: unknown argument '$1'" ;;
    esac
  done
  [ -n "$bundle" ] || usage_error "node: --bundle FILE.tar.gz is missing (made by install.sh bundle on the workstation)"
  [ -f "$bundle" ] || die "bundle $bundle does not exist; copy this node's archive from the workstation's bundle directory"
  need tar "unpack the bundle" tar
  need install "install the files" coreutils

  # ROOT: "" for /, else an absolute path without a trailing slash.
  local prefix=""
  if [ "$root" != / ]; then
    prefix=$(realpath -m -- "$root")
    [ "$prefix" != / ] || prefix=""
    [[ $prefix =~ ^[A-Za-z0-9._/+-]*$ ]] ||
      die "--root $root: use a path of letters, digits and . _ / + - only (it is written into tandem.toml)"
  fi
  local as_root=1 owner=(-o 0 -g 0)
  if [ "$(id -u)" -ne 0 ]; then
    [ -n "$prefix" ] || die "installing into / needs root: run it with sudo (or try it out with --root DIR)"
    as_root=0; owner=()
  fi

  local use_systemd=0
  if [ "$systemd" = 1 ] && [ -z "$prefix" ]; then
    use_systemd=1
    need systemctl "start tandem as a service" systemd
    [ -d /run/systemd/system ] ||
      die "systemd is not running on this machine; install with --no-systemd and start tandem another way: /usr/local/bin/tandem run --config /etc/tandem/tandem.toml"
  fi

  # Binaries.
  if [ -z "$bin_dir" ]; then
    if [ -f "$script_dir/../Cargo.toml" ] && [ -x "$script_dir/../target/release/tandem" ]; then
      bin_dir=$script_dir/../target/release
    else
      bin_dir=$script_dir
    fi
  fi
  local b
  for b in tandem tandemctl; do
    [ -x "$bin_dir/$b" ] ||
      die "$bin_dir/$b not found: build it (cargo build --release -p tandem-node -p tandem-client --bins) or give --bin-dir DIR, the directory holding tandem and tandemctl"
  done
  # The unit.
  if [ -z "$unit" ]; then
    for unit in "$script_dir/systemd/tandem.service" "$script_dir/tandem.service" ""; do
      [ -z "$unit" ] || [ ! -f "$unit" ] || break
    done
    [ -n "$unit" ] ||
      die "tandem.service not found in $script_dir/systemd/ or $script_dir/; give --unit FILE (the repository has it in deploy/systemd/tandem.service)"
  fi
  [ -f "$unit" ] || die "--unit $unit does not exist; the repository has the unit in deploy/systemd/tandem.service"

  # Unpack and check the archive.
  local work
  work=$(umask 077 && mktemp -d)
  # shellcheck disable=SC2064  # expand now: $work is local
  trap "rm -rf '$work'" EXIT
  tar -xzf "$bundle" -C "$work" --no-same-owner ||
    die "$bundle is not a gzip tar archive; copy it again from the bundle directory"
  [ -z "$(find "$work" -name ca.key)" ] ||
    die "$bundle holds the CA key (ca.key), which must never be on a node; make the archives again with install.sh bundle"
  local f
  for f in "${bundle_files[@]}"; do
    [ -f "$work/$f" ] || die "$bundle has no $f: it was not made by install.sh bundle, or is damaged; copy it again"
  done
  local extra
  extra=$(cd "$work" && find . -mindepth 1 ! -type d | sed 's|^\./||' | grep -vxF -f <(printf '%s\n' "${bundle_files[@]}")) || true
  [ -z "$extra" ] || die "$bundle holds files no node needs ($(echo "$extra" | tr '\n' ' ')); make the archives again with install.sh bundle"
  local role
  role=$(config_role "$work/tandem.toml")
  [ -n "$role" ] || die "$bundle's tandem.toml names no member with its node_id; make the archives again with install.sh bundle"
  if [ -n "$prefix" ]; then
    # Under ROOT, the paths in the config point under ROOT too.
    sed -i -e "s|\"/etc/tandem/|\"$prefix/etc/tandem/|g" -e "s|\"/var/lib/tandem\"|\"$prefix/var/lib/tandem\"|g" \
      "$work/tandem.toml"
    sed -i "1i # Installed under $prefix by install.sh node --root: paths below point there." "$work/tandem.toml"
  fi

  # Nothing in /etc/tandem is replaced unless it is the same or --force says so.
  local etc=$prefix/etc/tandem conflicts=()
  for f in "${bundle_files[@]}"; do
    if [ -e "$etc/$f" ] && ! cmp -s "$etc/$f" "$work/$f"; then conflicts+=("$etc/$f"); fi
  done
  if [ "${#conflicts[@]}" -gt 0 ] && [ "$force" = 0 ]; then
    die "these files differ from $bundle's and were left alone: ${conflicts[*]}; nothing was changed. Compare them (tar -xzf unpacks the archive), then add --force to replace them (the old ones are kept as FILE.old)"
  fi

  # Install.
  local changed=()
  install -d -m 0755 "$prefix/usr/local/bin" "$prefix/etc/systemd/system"
  for b in tandem tandemctl; do
    if ! cmp -s "$bin_dir/$b" "$prefix/usr/local/bin/$b"; then
      # A new file renamed over the old one: a running tandem keeps its image.
      install "${owner[@]}" -m 0755 "$bin_dir/$b" "$prefix/usr/local/bin/.$b.new"
      mv -f "$prefix/usr/local/bin/.$b.new" "$prefix/usr/local/bin/$b"
      changed+=("$prefix/usr/local/bin/$b")
    fi
  done
  local d
  for d in . tls tokens; do
    install -d "${owner[@]}" -m "${dir_mode[$d]}" "$etc/$d"
    chmod "${dir_mode[$d]}" "$etc/$d"
  done
  for f in "${bundle_files[@]}"; do
    if [ -e "$etc/$f" ] && cmp -s "$etc/$f" "$work/$f"; then
      chmod "${file_mode[$f]}" "$etc/$f"
      [ "$as_root" = 0 ] || chown 0:0 "$etc/$f"
      continue
    fi
    [ ! -e "$etc/$f" ] || cp -p "$etc/$f" "$etc/$f.old"
    local new
    new=$(dirname "$etc/$f")/.$(basename "$f").new
    install "${owner[@]}" -m "${file_mode[$f]}" "$work/$f" "$new"
    mv -f "$new" "$etc/$f"
    changed+=("$etc/$f")
  done
  install -d "${owner[@]}" -m 0700 "$prefix/var/lib/tandem"
  chmod 0700 "$prefix/var/lib/tandem"
  if ! cmp -s "$unit" "$prefix/etc/systemd/system/tandem.service"; then
    install "${owner[@]}" -m 0644 "$unit" "$prefix/etc/systemd/system/tandem.service"
    changed+=("$prefix/etc/systemd/system/tandem.service")
  fi
  # The guide the unit's Documentation= points at, when it came along (repository or release).
  local doc
  for doc in "$script_dir/../docs/operations.md" "$script_dir/docs/operations.md" "$script_dir/operations.md"; do
    [ -f "$doc" ] || continue
    if ! cmp -s "$doc" "$prefix/usr/local/share/doc/tandem/operations.md"; then
      install -d -m 0755 "$prefix/usr/local/share/doc/tandem"
      install "${owner[@]}" -m 0644 "$doc" "$prefix/usr/local/share/doc/tandem/operations.md"
      changed+=("$prefix/usr/local/share/doc/tandem/operations.md")
    fi
    break
  done
  if [ "${#changed[@]}" -gt 0 ]; then
    printf 'installed %s\n' "${changed[@]}"
  else
    echo "already installed: nothing changed"
  fi

  # Check the config with the binary just installed.
  "$prefix/usr/local/bin/tandem" config check --config "$etc/tandem.toml" ||
    die "tandem refused $etc/tandem.toml (the error above names the key); the files are installed, nothing was started. Make the archives again with install.sh bundle, or edit the file and run: $prefix/usr/local/bin/tandem config check --config $etc/tandem.toml"

  local started=0
  if [ "$use_systemd" = 1 ]; then
    local was_active=0
    if systemctl is-active --quiet tandem; then was_active=1; fi
    systemctl daemon-reload
    # --no-block: the unit reports started only once the node joined its cluster, which on a new
    # cluster is after `tandem init`; until then it is "activating".
    systemctl enable --now --no-block tandem
    sleep 2
    if systemctl is-failed --quiet tandem; then
      die "tandem did not start; see why with: journalctl -u tandem -n 50 (fix it, then: systemctl restart tandem)"
    fi
    started=1
    if [ "$was_active" = 1 ] && [ "${#changed[@]}" -gt 0 ]; then
      echo "note: tandem was already running and keeps the old files until it restarts: systemctl restart tandem (restarting the active hands the service to the standby)"
    fi
  fi

  local name init="tandem init --config /etc/tandem/tandem.toml" ctl admin
  [ -z "$prefix" ] || init="$prefix/usr/local/bin/tandem init --config $etc/tandem.toml"
  name=$(sed -n 's/^# Tandem node "\([^"]*\)".*/\1/p' "$work/tandem.toml")
  # tandemctl on this machine reaches the admin API where it listens (loopback for 0.0.0.0).
  admin=$(sed -n 's/^admin_listen = "\(.*\)"$/\1/p' "$work/tandem.toml")
  admin=${admin:-127.0.0.1:7480}
  admin=${admin/#0.0.0.0:/127.0.0.1:}
  admin=${admin/#\[::\]:/[::1]:}
  ctl="${prefix:+$prefix/usr/local/bin/}tandemctl --nodes $admin --ca-file $etc/tls/ca.crt --token-file $etc/tokens/read.token status"
  echo
  echo "Node ${name:-?} ($role) installed."
  if [ "$started" = 1 ]; then
    echo "tandem runs as a service (\"activating\" until the cluster is initialized): systemctl status tandem; logs: journalctl -u tandem -f"
  elif [ -n "$prefix" ]; then
    echo "Installed under $prefix; start it by hand: $prefix/usr/local/bin/tandem run --config $etc/tandem.toml"
  else
    echo "Not started (--no-systemd): /usr/local/bin/tandem run --config /etc/tandem/tandem.toml"
  fi
  cat <<EOF
Next:
  1. Install the other nodes the same way, each with its own archive.
  2. Once all three run tandem, on one data node only (never on the witness), once:
       $init
  3. See the cluster:
       $ctl
     ($etc/tokens/read.token can only look; $etc/tokens/admin.token can also act.)
EOF
}

cmd=${1:-help}
[ $# -eq 0 ] || shift
case "$cmd" in
  bundle) cmd_bundle "$@" ;;
  node) cmd_node "$@" ;;
  help|-h|--help) usage ;;
  *) usage_error "unknown command '$cmd': use bundle, node or help" ;;
esac
