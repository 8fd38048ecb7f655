#!/usr/bin/env bash
# Tandem resource hook: move a secondary private IPv4 address to this instance when it
# becomes the active (both nodes' interfaces in the same subnet).
#
#   aws-secondary-ip.sh acquire|release|check     (without an argument: $TANDEM_ACTION)
#
# Used as a script resource (see docs/load-balancers.md):
#   acquire = "TANDEM_SECONDARY_IP=10.0.1.50 /etc/tandem/hooks/aws-secondary-ip.sh acquire"
#
#   acquire  assigns the address to this instance's network interface with
#            `aws ec2 assign-private-ip-addresses --allow-reassignment`, which takes it
#            from the other node in the same call, then adds it to the Linux interface
#            (`ip addr add`). Each step is skipped when already done.
#   release  removes the address from the Linux interface. The assignment in EC2 is left
#            by default (the next acquire reassigns it); with
#            TANDEM_SECONDARY_IP_ON_RELEASE=unassign it is also unassigned from this
#            instance's interface, if it is still assigned there.
#   check    exits 0 while the address is assigned to this interface in EC2 and present on
#            the Linux interface.
#
# Needs: bash, curl, timeout (coreutils), ip (iproute2), the AWS CLI (v1 or v2), the
# instance metadata service (IMDSv2), root or CAP_NET_ADMIN for `ip addr`, and credentials,
# normally an instance profile, that allow:
#   ec2:DescribeNetworkInterfaces  ec2:AssignPrivateIpAddresses  ec2:UnassignPrivateIpAddresses
#
# Environment:
#   TANDEM_SECONDARY_IP             required: the IPv4 address, in the subnet of both nodes
#   AWS_REGION                      optional: else AWS_DEFAULT_REGION, else this instance's region
#   TANDEM_SECONDARY_IP_ENI_ID      optional: the network interface (default: the primary one)
#   TANDEM_SECONDARY_IP_DEVICE      optional: its Linux name (default: found by MAC address)
#   TANDEM_SECONDARY_IP_PREFIX      optional: prefix length for `ip addr add` (default: the
#                                   subnet's, from the metadata service)
#   TANDEM_SECONDARY_IP_LOCAL       1 (default): add/remove the address on the Linux
#                                   interface; 0: leave that to the distribution's network
#                                   agent
#   TANDEM_SECONDARY_IP_ON_RELEASE  keep (default) or unassign
#   TANDEM_HOOK_DEADLINE_S          give up after this many seconds (default 20); keep it
#                                   below the resource's acquire_timeout_ms and
#                                   release_timeout_ms
#   TANDEM_HOOK_CHECK_STRICT        1: `check` fails whenever the AWS API cannot be asked. By
#                                   default a throttled, timed-out or unreachable API counts
#                                   as a pass with a warning, so that an API hiccup does not
#                                   make Tandem restart every resource
#
# Exit status: 0 done, 1 failed, 2 usage or configuration error.
set -euo pipefail

readonly PROG=${0##*/}
readonly IMDS=http://169.254.169.254
readonly START=$SECONDS

say() { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
config_error() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 2; }
usage() { printf 'usage: %s acquire|release|check\n' "$PROG" >&2; exit 2; }

ACTION=${1:-${TANDEM_ACTION:-}}
case $ACTION in
  acquire | release | check) ;;
  *) usage ;;
esac

DEADLINE_S=${TANDEM_HOOK_DEADLINE_S:-20}
[[ $DEADLINE_S =~ ^[1-9][0-9]*$ ]] ||
  config_error "TANDEM_HOOK_DEADLINE_S must be a whole number of seconds > 0, not '$DEADLINE_S'"
ON_RELEASE=${TANDEM_SECONDARY_IP_ON_RELEASE:-keep}
case $ON_RELEASE in
  keep | unassign) ;;
  *) config_error "TANDEM_SECONDARY_IP_ON_RELEASE must be 'keep' or 'unassign', not '$ON_RELEASE'" ;;
esac
LOCAL=${TANDEM_SECONDARY_IP_LOCAL:-1}
[[ $LOCAL == 0 || $LOCAL == 1 ]] ||
  config_error "TANDEM_SECONDARY_IP_LOCAL must be 1 or 0, not '$LOCAL'"
IP=${TANDEM_SECONDARY_IP:-}
[[ -n $IP ]] ||
  config_error "TANDEM_SECONDARY_IP is not set: set it to the secondary private IPv4 address to move, e.g. in the resource's command: acquire = \"TANDEM_SECONDARY_IP=10.0.1.50 $0 acquire\""
[[ $IP =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]] ||
  config_error "TANDEM_SECONDARY_IP '$IP' is not an IPv4 address (no prefix: write 10.0.1.50, not 10.0.1.50/24)"
PREFIX=${TANDEM_SECONDARY_IP_PREFIX:-}
[[ -z $PREFIX || ($PREFIX =~ ^[0-9]+$ && $PREFIX -ge 1 && $PREFIX -le 32) ]] ||
  config_error "TANDEM_SECONDARY_IP_PREFIX must be a prefix length 1-32, not '$PREFIX'"

tools=(aws curl timeout)
[[ $LOCAL == 0 ]] || tools+=(ip)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 ||
    config_error "'$tool' is not on PATH (PATH=$PATH): install it (the AWS CLI: https://aws.amazon.com/cli/, curl, coreutils and iproute2 from the distribution)"
done

# Seconds left before the deadline (0 once it has passed).
remaining() {
  local left=$((DEADLINE_S - (SECONDS - START)))
  ((left > 0)) && echo "$left" || echo 0
}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# run CMD...: run a command within the deadline; stdout in OUT, stderr in ERR, returns its
# status. LABEL names the command in messages.
OUT='' ERR='' LABEL=''
run() {
  local left rc=0
  left=$(remaining)
  if ((left == 0)); then
    OUT='' ERR="the deadline of ${DEADLINE_S}s (TANDEM_HOOK_DEADLINE_S) has passed"
    return 124
  fi
  OUT=$(timeout --kill-after=2 "$left" "$@" 2>"$TMP/err") || rc=$?
  ERR=$(<"$TMP/err")
  if ((rc == 124 || rc == 137)); then
    ERR="'${LABEL:-$1}' did not finish within the deadline of ${DEADLINE_S}s (TANDEM_HOOK_DEADLINE_S)${ERR:+: $ERR}"
  elif ((rc != 0)) && [[ -z $ERR ]]; then
    ERR="'${LABEL:-$1}' exited with status $rc"
  fi
  return "$rc"
}

# imds PATH: read instance metadata (IMDSv2, a session token first) into META.
IMDS_TOKEN='' META=''
imds() {
  LABEL="curl $IMDS"
  if [[ -z $IMDS_TOKEN ]]; then
    run curl -fsS --max-time 2 -X PUT "$IMDS/latest/api/token" \
      -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' ||
      die "cannot get an IMDSv2 token from $IMDS: ${ERR:-no answer} (is this an EC2 instance with the metadata service enabled?)"
    IMDS_TOKEN=$OUT
  fi
  run curl -fsS --max-time 2 -H "X-aws-ec2-metadata-token: $IMDS_TOKEN" "$IMDS/latest/meta-data/$1" ||
    die "cannot read $1 from the instance metadata service: ${ERR:-no answer}"
  META=$OUT
}

# Region, network interface, Linux device and prefix: from the environment, else from the
# metadata service and /sys/class/net.
REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}
ENI_ID=${TANDEM_SECONDARY_IP_ENI_ID:-}
DEV=${TANDEM_SECONDARY_IP_DEVICE:-}
MAC=''
discover() {
  if [[ -z $REGION ]]; then
    imds placement/region
    REGION=$META
  fi
  if [[ -z $ENI_ID ]]; then
    imds mac
    MAC=$META
    imds "network/interfaces/macs/$MAC/interface-id"
    ENI_ID=$META
  elif [[ $LOCAL == 1 && (-z $DEV || -z $PREFIX) ]]; then
    imds network/interfaces/macs/
    local m
    for m in $META; do
      m=${m%/}
      imds "network/interfaces/macs/$m/interface-id"
      [[ $META != "$ENI_ID" ]] || MAC=$m
    done
    [[ -n $MAC ]] ||
      config_error "network interface $ENI_ID (TANDEM_SECONDARY_IP_ENI_ID) is not attached to this instance"
  fi
  [[ $LOCAL == 1 ]] || return 0
  if [[ -z $DEV ]]; then
    local d
    for d in /sys/class/net/*; do
      [[ -r $d/address && $(<"$d/address") == "$MAC" && ! -e $d/master ]] || continue
      DEV=${d##*/}
      break
    done
    [[ -n $DEV ]] ||
      config_error "no Linux network device has MAC address $MAC (interface $ENI_ID); set TANDEM_SECONDARY_IP_DEVICE"
  fi
  [[ -e /sys/class/net/$DEV ]] ||
    config_error "there is no network device '$DEV' (TANDEM_SECONDARY_IP_DEVICE); see 'ip link'"
  if [[ -z $PREFIX ]]; then
    imds "network/interfaces/macs/$MAC/subnet-ipv4-cidr-block"
    PREFIX=${META#*/}
  fi
}

ec2() {
  LABEL="aws ec2 $1"
  run aws --region "$REGION" --cli-connect-timeout 5 --cli-read-timeout 10 --output text ec2 "$@"
}

# Whether ERR looks like a passing API trouble (throttling, timeouts, the endpoint out of
# reach) rather than a wrong setting or a missing permission.
transient() {
  [[ $ERR =~ RequestLimitExceeded|Throttl|InternalError|Unavailable|[Tt]imed\ out|[Tt]imeout|deadline|Could\ not\ connect|EndpointConnectionError|Connection\ (was\ )?(closed|reset|refused) ]]
}

# Whether EC2 has the address on this node's interface (sets ASSIGNED to yes or no).
ASSIGNED=''
look() {
  ec2 describe-network-interfaces --network-interface-ids "$ENI_ID" \
    --query 'NetworkInterfaces[0].PrivateIpAddresses[].PrivateIpAddress' || return
  ASSIGNED=no
  local a
  for a in $OUT; do
    [[ $a != "$IP" ]] || ASSIGNED=yes
  done
}

# Sets HAVE to the address as configured ("10.0.1.50/24") and HAVE_DEV to its device, or
# both to nothing; looks on DEV when it is known, else on every device.
HAVE='' HAVE_DEV=''
local_address() {
  local where=()
  [[ -z $DEV ]] || where=(dev "$DEV")
  LABEL="ip addr show"
  run ip -o -4 addr show "${where[@]}" || die "cannot list the addresses${DEV:+ of $DEV}: $ERR"
  read -r HAVE_DEV HAVE < <(awk -v ip="$IP" '{ split($4, a, "/"); if (a[1] == ip) { print $2, $4; exit } }' <<<"$OUT") || true
}

acquire() {
  discover
  look || die "cannot look up interface $ENI_ID: $ERR"
  if [[ $ASSIGNED == yes ]]; then
    say "$IP is already assigned to $ENI_ID in EC2"
  else
    say "assigning $IP to $ENI_ID, epoch ${TANDEM_EPOCH:-?}"
    until ec2 assign-private-ip-addresses --network-interface-id "$ENI_ID" \
      --private-ip-addresses "$IP" --allow-reassignment; do
      (($(remaining) > 2)) || die "assign-private-ip-addresses failed: $ERR"
      warn "assign-private-ip-addresses failed, trying again: $ERR"
      sleep 2
    done
    until look && [[ $ASSIGNED == yes ]]; do
      (($(remaining) > 1)) || die "$IP is not assigned to $ENI_ID within ${DEADLINE_S}s${ERR:+: $ERR}"
      sleep 1
    done
    say "$IP is assigned to $ENI_ID"
  fi
  [[ $LOCAL == 1 ]] || return 0
  local_address
  if [[ -n $HAVE ]]; then
    say "$IP is already on $DEV ($HAVE)"
  else
    LABEL="ip addr add"
    run ip addr add "$IP/$PREFIX" dev "$DEV" || die "cannot add $IP/$PREFIX to $DEV: $ERR"
    say "added $IP/$PREFIX to $DEV"
  fi
}

release() {
  if [[ $LOCAL == 1 ]]; then
    local_address
    if [[ -n $HAVE ]]; then
      LABEL="ip addr del"
      run ip addr del "$HAVE" dev "$HAVE_DEV" || die "cannot remove $HAVE from $HAVE_DEV: $ERR"
      say "removed $HAVE from $HAVE_DEV"
    else
      say "$IP is not on ${DEV:-any device}; nothing to remove"
    fi
  fi
  if [[ $ON_RELEASE == keep ]]; then
    say "leaving the EC2 assignment as it is (TANDEM_SECONDARY_IP_ON_RELEASE=keep); the next active reassigns it"
    return 0
  fi
  discover
  look || die "cannot look up interface $ENI_ID: $ERR"
  if [[ $ASSIGNED == no ]]; then
    say "$IP is not assigned to $ENI_ID; nothing to unassign"
    return 0
  fi
  # Scoped to this interface: an assignment the other node made meanwhile is not touched
  # (the call then fails because the address is no longer here).
  if ! ec2 unassign-private-ip-addresses --network-interface-id "$ENI_ID" --private-ip-addresses "$IP"; then
    look && [[ $ASSIGNED == no ]] && {
      say "$IP moved to another interface meanwhile; nothing to unassign"
      return 0
    }
    die "unassign-private-ip-addresses failed: $ERR"
  fi
  say "unassigned $IP from $ENI_ID"
}

check() {
  discover
  if [[ $LOCAL == 1 ]]; then
    local_address
    [[ -n $HAVE ]] || die "$IP is not on $DEV"
  fi
  if ! look; then
    if [[ ${TANDEM_HOOK_CHECK_STRICT:-0} != 1 ]] && transient; then
      warn "cannot look up interface $ENI_ID, counting the check as passed: $ERR"
      return 0
    fi
    die "cannot look up interface $ENI_ID: $ERR"
  fi
  [[ $ASSIGNED == yes ]] || die "$IP is no longer assigned to $ENI_ID in EC2"
}

"$ACTION"
