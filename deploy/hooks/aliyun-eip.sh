#!/usr/bin/env bash
# Tandem resource hook: move an Alibaba Cloud elastic IP (EIP) to this ECS instance when it
# becomes the active.
#
#   aliyun-eip.sh acquire|release|check     (without an argument: $TANDEM_ACTION)
#
# Used as a script resource (see docs/load-balancers.md):
#   acquire = "TANDEM_EIP_ALLOCATION_ID=eip-bp1abc... /etc/tandem/hooks/aliyun-eip.sh acquire"
#
#   acquire  binds the EIP to this instance. An EIP can be bound to one instance at a time,
#            so when it is still bound to the other node it is first unbound from it
#            (UnassociateEipAddress), then bound here (AssociateEipAddress); both calls are
#            asynchronous and the script waits, within its deadline, until
#            DescribeEipAddresses shows the EIP InUse by this instance. Succeeds at once when
#            it already is. Tandem runs acquire only once the previous active has released
#            or its lease and release budget have run out, so taking the EIP away from the
#            other node is safe.
#   release  does nothing by default: the next acquire takes the EIP wherever it is. With
#            TANDEM_EIP_ON_RELEASE=unassociate it unbinds the EIP, only if it is bound to this
#            instance.
#   check    exits 0 while the EIP is InUse by this instance.
#
# Needs: bash, curl, jq, timeout (coreutils), the Alibaba Cloud CLI (`aliyun`, configured
# for the user Tandem runs as, e.g. with an instance RAM role:
#   aliyun configure set --profile tandem --mode EcsRamRole --ram-role-name ROLE --region REGION
# ) and a RAM policy allowing:
#   vpc:DescribeEipAddresses  vpc:AssociateEipAddress  vpc:UnassociateEipAddress
#
# Environment:
#   TANDEM_EIP_ALLOCATION_ID   required: the EIP's instance id (eip-...)
#   TANDEM_ALIYUN_REGION       optional: the region (default: this instance's, from the
#                              metadata service)
#   TANDEM_ALIYUN_PROFILE      optional: the CLI profile to use (--profile)
#   TANDEM_ALIYUN_VPC_ENDPOINT 1: call the API through its VPC endpoint (--vpc), for
#                              instances without internet access
#   TANDEM_EIP_INSTANCE_ID     optional: what to bind to (default: this ECS instance's id)
#   TANDEM_EIP_INSTANCE_TYPE   optional: EcsInstance (default) or NetworkInterface (then
#                              TANDEM_EIP_INSTANCE_ID is the secondary ENI's id, eni-...)
#   TANDEM_EIP_ON_RELEASE      keep (default) or unassociate
#   TANDEM_HOOK_DEADLINE_S     give up after this many seconds (default 30); keep it below
#                              the resource's acquire_timeout_ms and release_timeout_ms
#   TANDEM_HOOK_CHECK_STRICT   1: `check` fails whenever the API cannot be asked. By
#                              default a throttled, timed-out or unreachable API counts as a
#                              pass with a warning, so that an API hiccup does not make
#                              Tandem restart every resource
#
# Exit status: 0 done, 1 failed, 2 usage or configuration error.
set -euo pipefail

readonly PROG=${0##*/}
readonly METADATA=http://100.100.100.200
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

DEADLINE_S=${TANDEM_HOOK_DEADLINE_S:-30}
[[ $DEADLINE_S =~ ^[1-9][0-9]*$ ]] ||
  config_error "TANDEM_HOOK_DEADLINE_S must be a whole number of seconds > 0, not '$DEADLINE_S'"
ON_RELEASE=${TANDEM_EIP_ON_RELEASE:-keep}
case $ON_RELEASE in
  keep | unassociate) ;;
  *) config_error "TANDEM_EIP_ON_RELEASE must be 'keep' or 'unassociate', not '$ON_RELEASE'" ;;
esac
ALLOCATION_ID=${TANDEM_EIP_ALLOCATION_ID:-}
[[ -n $ALLOCATION_ID ]] ||
  config_error "TANDEM_EIP_ALLOCATION_ID is not set: set it to the EIP's instance id (eip-...), e.g. in the resource's command: acquire = \"TANDEM_EIP_ALLOCATION_ID=eip-... $0 acquire\""
[[ $ALLOCATION_ID =~ ^eip-[0-9a-z]+$ ]] ||
  config_error "TANDEM_EIP_ALLOCATION_ID '$ALLOCATION_ID' is not an EIP instance id (eip-...); the address itself is not accepted"
INSTANCE_TYPE=${TANDEM_EIP_INSTANCE_TYPE:-EcsInstance}
case $INSTANCE_TYPE in
  EcsInstance | NetworkInterface) ;;
  *) config_error "TANDEM_EIP_INSTANCE_TYPE must be EcsInstance or NetworkInterface, not '$INSTANCE_TYPE'" ;;
esac
[[ $INSTANCE_TYPE == EcsInstance || -n ${TANDEM_EIP_INSTANCE_ID:-} ]] ||
  config_error "TANDEM_EIP_INSTANCE_TYPE=NetworkInterface needs TANDEM_EIP_INSTANCE_ID set to the ENI's id (eni-...)"

for tool in aliyun curl jq timeout; do
  command -v "$tool" >/dev/null 2>&1 ||
    config_error "'$tool' is not on PATH (PATH=$PATH): install it (the Alibaba Cloud CLI: https://github.com/aliyun/aliyun-cli, curl, jq and coreutils from the distribution)"
done
# The CLI reads its profiles from ~/.aliyun; a service manager may start Tandem without HOME.
if [[ -z ${HOME:-} ]]; then
  HOME=$(getent passwd "$(id -u)" | cut -d: -f6)
  export HOME
fi

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
  elif ((rc != 0)); then
    # The CLI prints its errors on stdout.
    ERR=${ERR:-$OUT}
    ERR=${ERR:-"'${LABEL:-$1}' exited with status $rc"}
  fi
  return "$rc"
}

# metadata PATH: read instance metadata into META (hardened mode: a token first; falls back
# to a plain request where the token endpoint is not offered).
MD_TOKEN='' META=''
metadata() {
  LABEL="curl $METADATA"
  local auth=()
  if [[ -z $MD_TOKEN ]] && run curl -fsS --max-time 2 -X PUT "$METADATA/latest/api/token" \
    -H 'X-aliyun-ecs-metadata-token-ttl-seconds: 300'; then
    MD_TOKEN=$OUT
  fi
  [[ -z $MD_TOKEN ]] || auth=(-H "X-aliyun-ecs-metadata-token: $MD_TOKEN")
  run curl -fsS --max-time 2 "${auth[@]}" "$METADATA/latest/meta-data/$1" ||
    die "cannot read $1 from the metadata service at $METADATA: ${ERR:-no answer} (is this an ECS instance?)"
  META=$OUT
}

# Region and instance: from the environment, else from the metadata service.
REGION=${TANDEM_ALIYUN_REGION:-}
INSTANCE_ID=${TANDEM_EIP_INSTANCE_ID:-}
discover() {
  if [[ -z $REGION ]]; then
    metadata region-id
    REGION=$META
  fi
  if [[ -z $INSTANCE_ID ]]; then
    metadata instance-id
    INSTANCE_ID=$META
  fi
}

CLI=(aliyun --read-timeout 10 --connect-timeout 5)
[[ -z ${TANDEM_ALIYUN_PROFILE:-} ]] || CLI+=(--profile "$TANDEM_ALIYUN_PROFILE")
[[ ${TANDEM_ALIYUN_VPC_ENDPOINT:-0} != 1 ]] || CLI+=(--vpc)

vpc() {
  LABEL="aliyun vpc $1"
  run "${CLI[@]}" vpc "$@" --RegionId "$REGION"
}

# Whether ERR looks like a passing API trouble (throttling, timeouts, the endpoint out of
# reach) rather than a wrong setting or a missing permission.
transient() {
  [[ $ERR =~ Throttling|ServiceUnavailable|InternalError|[Tt]imed\ out|[Tt]imeout|deadline|connection\ (refused|reset)|no\ such\ host|EOF ]]
}

# The EIP's state: sets HOLDER (instance id or empty), HOLDER_TYPE, STATUS, ADDRESS.
HOLDER='' HOLDER_TYPE='' STATUS='' ADDRESS=''
locate() {
  vpc DescribeEipAddresses --AllocationId "$ALLOCATION_ID" || return
  local fields
  fields=$(jq -r '.EipAddresses.EipAddress[0] // empty
    | [.InstanceId // "", .InstanceType // "", .Status // "", .IpAddress // ""] | join("|")' <<<"$OUT" 2>&1) || {
    ERR="cannot read DescribeEipAddresses' answer: $fields"
    return 1
  }
  [[ -n $fields ]] || {
    ERR="no EIP $ALLOCATION_ID in region $REGION"
    return 1
  }
  IFS="|" read -r HOLDER HOLDER_TYPE STATUS ADDRESS <<<"$fields" || true
}

is_ours() { [[ $STATUS == InUse && $HOLDER == "$INSTANCE_ID" ]]; }

# Call an API that changes the EIP; on a refusal because the EIP is busy, the caller looks again.
change() {
  vpc "$@" && return 0
  [[ $ERR =~ TaskConflict|IncorrectEipStatus|IncorrectStatus|OperationConflict|Throttling ]] || return 1
  warn "$1 refused for now, looking again: $ERR"
}

acquire() {
  local announced=''
  discover
  while :; do
    locate || die "cannot look up EIP $ALLOCATION_ID: $ERR"
    if is_ours; then
      if [[ -n $announced ]]; then
        say "$ADDRESS is bound to $INSTANCE_ID"
      else
        say "$ADDRESS is already bound to $INSTANCE_ID; nothing to do"
      fi
      return 0
    fi
    (($(remaining) > 1)) ||
      die "$ADDRESS is not bound to $INSTANCE_ID within ${DEADLINE_S}s (status $STATUS, bound to: ${HOLDER:-nothing})"
    case $STATUS in
      Associating | Unassociating)
        sleep 1
        ;;
      InUse)
        # Bound to the other node (or something else): unbind it there first.
        say "unbinding $ADDRESS from $HOLDER ($HOLDER_TYPE) to bind it to $INSTANCE_ID, epoch ${TANDEM_EPOCH:-?}"
        announced=1
        change UnassociateEipAddress --AllocationId "$ALLOCATION_ID" --InstanceId "$HOLDER" \
          --InstanceType "${HOLDER_TYPE:-EcsInstance}" || die "UnassociateEipAddress failed: $ERR"
        sleep 1
        ;;
      Available)
        say "binding $ADDRESS to $INSTANCE_ID ($INSTANCE_TYPE), epoch ${TANDEM_EPOCH:-?}"
        announced=1
        change AssociateEipAddress --AllocationId "$ALLOCATION_ID" --InstanceId "$INSTANCE_ID" \
          --InstanceType "$INSTANCE_TYPE" || die "AssociateEipAddress failed: $ERR"
        sleep 1
        ;;
      *)
        die "EIP $ALLOCATION_ID ($ADDRESS) is in state '$STATUS'; cannot bind it"
        ;;
    esac
  done
}

release() {
  if [[ $ON_RELEASE == keep ]]; then
    say "leaving the EIP where it is (TANDEM_EIP_ON_RELEASE=keep); the next active takes it"
    return 0
  fi
  local acted=''
  discover
  while :; do
    locate || die "cannot look up EIP $ALLOCATION_ID: $ERR"
    if [[ $HOLDER != "$INSTANCE_ID" ]]; then
      if [[ -n $acted ]]; then
        say "$ADDRESS is unbound from $INSTANCE_ID"
      else
        say "$ADDRESS is not bound to $INSTANCE_ID (status $STATUS, bound to: ${HOLDER:-nothing}); nothing to do"
      fi
      return 0
    fi
    (($(remaining) > 1)) || die "$ADDRESS is still bound to $INSTANCE_ID after ${DEADLINE_S}s (status $STATUS)"
    case $STATUS in
      InUse)
        say "unbinding $ADDRESS from $INSTANCE_ID"
        acted=1
        # Names this instance: an EIP bound elsewhere meanwhile is not touched.
        change UnassociateEipAddress --AllocationId "$ALLOCATION_ID" --InstanceId "$INSTANCE_ID" \
          --InstanceType "$INSTANCE_TYPE" || die "UnassociateEipAddress failed: $ERR"
        sleep 1
        ;;
      *) sleep 1 ;;
    esac
  done
}

check() {
  discover
  if ! locate; then
    if [[ ${TANDEM_HOOK_CHECK_STRICT:-0} != 1 ]] && transient; then
      warn "cannot look up EIP $ALLOCATION_ID, counting the check as passed: $ERR"
      return 0
    fi
    die "cannot look up EIP $ALLOCATION_ID: $ERR"
  fi
  is_ours || die "$ADDRESS is not bound to $INSTANCE_ID (status $STATUS, bound to: ${HOLDER:-nothing})"
}

"$ACTION"
