#!/usr/bin/env bash
# Tandem resource hook: move an AWS Elastic IP to this instance when it becomes the active.
#
#   aws-eip.sh acquire|release|check     (without an argument: $TANDEM_ACTION)
#
# Used as a script resource (see docs/load-balancers.md):
#   acquire = "TANDEM_EIP_ALLOCATION_ID=eipalloc-0123456789abcdef0 /etc/tandem/hooks/aws-eip.sh acquire"
#
#   acquire  associates the Elastic IP with this instance's network interface with
#            `aws ec2 associate-address --allow-reassociation`, which takes it from the
#            other node in the same call. Succeeds at once when it is already here.
#   release  does nothing by default: the next acquire takes the address wherever it is.
#            With TANDEM_EIP_ON_RELEASE=disassociate it disassociates the address, but only
#            the association that is this instance's (a newer one elsewhere is left alone).
#   check    exits 0 while the address is associated with this instance.
#
# Needs: bash, curl, timeout (coreutils), the AWS CLI (v1 or v2), the instance metadata
# service (IMDSv2) and credentials, normally an instance profile, that allow:
#   ec2:DescribeAddresses  ec2:AssociateAddress  ec2:DisassociateAddress
#
# Environment:
#   TANDEM_EIP_ALLOCATION_ID  required: the Elastic IP's allocation id (eipalloc-...)
#   AWS_REGION                optional: else AWS_DEFAULT_REGION, else this instance's region
#   TANDEM_EIP_ENI_ID         optional: the network interface (default: the primary one)
#   TANDEM_EIP_PRIVATE_IP     optional: the private address on it to map the Elastic IP to
#                             (default: the interface's primary private address)
#   TANDEM_EIP_ON_RELEASE     keep (default) or disassociate
#   TANDEM_HOOK_DEADLINE_S    give up after this many seconds (default 20); keep it below
#                             the resource's acquire_timeout_ms and release_timeout_ms
#   TANDEM_HOOK_CHECK_STRICT  1: `check` fails whenever the AWS API cannot be asked. By
#                             default a throttled, timed-out or unreachable API counts as a
#                             pass with a warning, so that an API hiccup does not make Tandem
#                             restart every resource (a failed check releases and acquires
#                             them all again)
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
ON_RELEASE=${TANDEM_EIP_ON_RELEASE:-keep}
case $ON_RELEASE in
  keep | disassociate) ;;
  *) config_error "TANDEM_EIP_ON_RELEASE must be 'keep' or 'disassociate', not '$ON_RELEASE'" ;;
esac
ALLOCATION_ID=${TANDEM_EIP_ALLOCATION_ID:-}
[[ -n $ALLOCATION_ID ]] ||
  config_error "TANDEM_EIP_ALLOCATION_ID is not set: set it to the Elastic IP's allocation id (eipalloc-...), e.g. in the resource's command: acquire = \"TANDEM_EIP_ALLOCATION_ID=eipalloc-... $0 acquire\""
[[ $ALLOCATION_ID =~ ^eipalloc-[0-9a-f]+$ ]] ||
  config_error "TANDEM_EIP_ALLOCATION_ID '$ALLOCATION_ID' is not an allocation id (eipalloc-...); the public address itself is not accepted"

for tool in aws curl timeout; do
  command -v "$tool" >/dev/null 2>&1 ||
    config_error "'$tool' is not on PATH (PATH=$PATH): install it (the AWS CLI: https://aws.amazon.com/cli/, curl and coreutils from the distribution)"
done

# Seconds left before the deadline (at least 1 while any is left, 0 after).
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

# Region and network interface: from the environment, else from the metadata service.
REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}
ENI_ID=${TANDEM_EIP_ENI_ID:-}
PRIVATE_IP=${TANDEM_EIP_PRIVATE_IP:-}
discover() {
  if [[ -z $REGION ]]; then
    imds placement/region
    REGION=$META
  fi
  if [[ -z $ENI_ID ]]; then
    imds mac
    imds "network/interfaces/macs/$META/interface-id"
    ENI_ID=$META
  fi
}

ec2() {
  LABEL="aws ec2 $1"
  run aws --region "$REGION" --cli-connect-timeout 5 --cli-read-timeout 10 --output text ec2 "$@"
}

# Where the Elastic IP is now: sets CUR_ENI, CUR_ASSOC, CUR_PRIVATE_IP, PUBLIC_IP ("None" if unset).
CUR_ENI='' CUR_ASSOC='' CUR_PRIVATE_IP='' PUBLIC_IP=''
locate() {
  ec2 describe-addresses --allocation-ids "$ALLOCATION_ID" \
    --query 'Addresses[0].[NetworkInterfaceId,AssociationId,PrivateIpAddress,PublicIp]' || return
  read -r CUR_ENI CUR_ASSOC CUR_PRIVATE_IP PUBLIC_IP <<<"$OUT" || true
  [[ -n $PUBLIC_IP && $PUBLIC_IP != None ]] || {
    ERR="no Elastic IP with allocation id $ALLOCATION_ID in $REGION"
    return 1
  }
}

is_ours() {
  [[ $CUR_ENI == "$ENI_ID" ]] && [[ -z $PRIVATE_IP || $CUR_PRIVATE_IP == "$PRIVATE_IP" ]]
}

acquire() {
  discover
  locate || die "cannot look up the Elastic IP: $ERR"
  if is_ours; then
    say "$PUBLIC_IP is already associated with $ENI_ID ($CUR_PRIVATE_IP); nothing to do"
    return 0
  fi
  say "associating $PUBLIC_IP with $ENI_ID${PRIVATE_IP:+ ($PRIVATE_IP)} (was: ${CUR_ENI/None/not associated}), epoch ${TANDEM_EPOCH:-?}"
  local args=(associate-address --allocation-id "$ALLOCATION_ID" --network-interface-id "$ENI_ID"
    --allow-reassociation)
  [[ -z $PRIVATE_IP ]] || args+=(--private-ip-address "$PRIVATE_IP")
  # A few tries: the API throttles and the address can be mid-change.
  until ec2 "${args[@]}" --query AssociationId; do
    (($(remaining) > 2)) || die "associate-address failed: $ERR"
    warn "associate-address failed, trying again: $ERR"
    sleep 2
  done
  # The association is effective once describe-addresses shows it.
  until locate && is_ours; do
    (($(remaining) > 1)) ||
      die "$PUBLIC_IP is not associated with $ENI_ID within ${DEADLINE_S}s${ERR:+: $ERR}"
    sleep 1
  done
  say "$PUBLIC_IP is associated with $ENI_ID ($CUR_PRIVATE_IP), association $CUR_ASSOC"
}

release() {
  if [[ $ON_RELEASE == keep ]]; then
    say "leaving the Elastic IP where it is (TANDEM_EIP_ON_RELEASE=keep); the next active takes it"
    return 0
  fi
  discover
  locate || die "cannot look up the Elastic IP: $ERR"
  if [[ $CUR_ENI != "$ENI_ID" ]]; then
    say "$PUBLIC_IP is not associated with $ENI_ID (it is with: ${CUR_ENI/None/nothing}); nothing to do"
    return 0
  fi
  say "disassociating $PUBLIC_IP from $ENI_ID (association $CUR_ASSOC)"
  # By association id: if the other node re-associated the address meanwhile, this id no
  # longer exists and its association is left alone.
  if ! ec2 disassociate-address --association-id "$CUR_ASSOC"; then
    if [[ $ERR == *InvalidAssociationID.NotFound* ]]; then
      say "association $CUR_ASSOC is gone already (the address moved on); nothing to do"
      return 0
    fi
    die "disassociate-address failed: $ERR"
  fi
  say "disassociated $PUBLIC_IP"
}

# Whether ERR looks like a passing API trouble (throttling, timeouts, the endpoint out of
# reach) rather than a wrong setting or a missing permission.
transient() {
  [[ $ERR =~ RequestLimitExceeded|Throttl|InternalError|Unavailable|[Tt]imed\ out|[Tt]imeout|deadline|Could\ not\ connect|EndpointConnectionError|Connection\ (was\ )?(closed|reset|refused) ]]
}

check() {
  discover
  if ! locate; then
    if [[ ${TANDEM_HOOK_CHECK_STRICT:-0} != 1 ]] && transient; then
      warn "cannot look up the Elastic IP, counting the check as passed: $ERR"
      return 0
    fi
    die "cannot look up the Elastic IP: $ERR"
  fi
  is_ours || die "$PUBLIC_IP is associated with ${CUR_ENI/None/nothing} (${CUR_PRIVATE_IP/None/-}), not with $ENI_ID${PRIVATE_IP:+ ($PRIVATE_IP)}"
}

"$ACTION"
