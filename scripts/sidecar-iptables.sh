#!/usr/bin/env bash
# Redirects a pod's (or network namespace's) TCP traffic to torii running as
# a transparent sidecar, with iptables REDIRECT in the nat table:
#
#   outbound: every TCP connection this namespace opens    -> torii :PROXY_PORT
#             (an original_destination listener: it reads SO_ORIGINAL_DST and
#             forwards to where the connection was headed)
#   inbound:  (optional) every TCP connection arriving     -> torii :INBOUND_PORT
#
# torii's own connections must not be redirected again, or every forwarded
# connection would loop back into torii: they are excluded by owner, so run
# torii as its own user (--uid) or group (--gid). Loopback destinations are
# excluded too (local admin ports, the app talking to itself).
#
# Usage (as root, inside the namespace, e.g. `ip netns exec NS ...`):
#   sidecar-iptables.sh --uid 1337 [--proxy-port 15001] [--inbound-port 15006]
#                       [--exclude-outbound-ports 22,53] [--exclude-inbound-ports 22]
#                       [--ipv6] [--dry-run]
#   sidecar-iptables.sh --clean [--ipv6]
#
# --ipv6 applies the same rules with ip6tables (torii then listens on [::]).
# --dry-run prints the commands instead of running them.
# The matching torii listener:
#   listeners:
#     - name: outbound
#       address: "[::]:15001"       # or 0.0.0.0:15001 for IPv4 only
#       original_destination: true
set -euo pipefail

proxy_port=15001
inbound_port=""
owner_uid=""
owner_gid=""
exclude_out=""
exclude_in=""
ipv6=0
clean=0
dry=0

die() {
  echo "sidecar-iptables.sh: $*" >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --proxy-port) proxy_port="${2:?}"; shift 2 ;;
    --inbound-port) inbound_port="${2:?}"; shift 2 ;;
    --uid) owner_uid="${2:?}"; shift 2 ;;
    --gid) owner_gid="${2:?}"; shift 2 ;;
    --exclude-outbound-ports) exclude_out="${2:?}"; shift 2 ;;
    --exclude-inbound-ports) exclude_in="${2:?}"; shift 2 ;;
    --ipv6) ipv6=1; shift ;;
    --clean) clean=1; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

run() {
  if [ "$dry" -eq 1 ]; then
    echo "$*"
  else
    "$@"
  fi
}

tables() {
  echo iptables
  if [ "$ipv6" -eq 1 ]; then echo ip6tables; fi
}

remove() {
  local ipt=$1
  # Each step may find nothing to remove: that is fine.
  run "$ipt" -t nat -D OUTPUT -p tcp -j TORII_OUTPUT 2>/dev/null || true
  run "$ipt" -t nat -D PREROUTING -p tcp -j TORII_INBOUND 2>/dev/null || true
  for chain in TORII_OUTPUT TORII_INBOUND; do
    run "$ipt" -t nat -F "$chain" 2>/dev/null || true
    run "$ipt" -t nat -X "$chain" 2>/dev/null || true
  done
}

install() {
  local ipt=$1 loopback=$2
  run "$ipt" -t nat -N TORII_OUTPUT
  # torii's own upstream connections go out as they are (no loop).
  if [ -n "$owner_uid" ]; then
    run "$ipt" -t nat -A TORII_OUTPUT -m owner --uid-owner "$owner_uid" -j RETURN
  fi
  if [ -n "$owner_gid" ]; then
    run "$ipt" -t nat -A TORII_OUTPUT -m owner --gid-owner "$owner_gid" -j RETURN
  fi
  run "$ipt" -t nat -A TORII_OUTPUT -d "$loopback" -j RETURN
  local port
  for port in ${exclude_out//,/ }; do
    run "$ipt" -t nat -A TORII_OUTPUT -p tcp --dport "$port" -j RETURN
  done
  run "$ipt" -t nat -A TORII_OUTPUT -p tcp -j REDIRECT --to-ports "$proxy_port"
  run "$ipt" -t nat -A OUTPUT -p tcp -j TORII_OUTPUT

  if [ -n "$inbound_port" ]; then
    run "$ipt" -t nat -N TORII_INBOUND
    for port in ${exclude_in//,/ }; do
      run "$ipt" -t nat -A TORII_INBOUND -p tcp --dport "$port" -j RETURN
    done
    run "$ipt" -t nat -A TORII_INBOUND -p tcp -j REDIRECT --to-ports "$inbound_port"
    run "$ipt" -t nat -A PREROUTING -p tcp -j TORII_INBOUND
  fi
}

for ipt in $(tables); do
  command -v "$ipt" >/dev/null || [ "$dry" -eq 1 ] || die "$ipt is not installed (apt-get install iptables)"
done

if [ "$clean" -eq 1 ]; then
  for ipt in $(tables); do remove "$ipt"; done
  exit 0
fi

if [ -z "$owner_uid" ] && [ -z "$owner_gid" ]; then
  die "give --uid or --gid (the user or group torii runs as): without an exclusion torii's own connections would be redirected back to torii"
fi

for ipt in $(tables); do
  remove "$ipt"
  if [ "$ipt" = ip6tables ]; then install "$ipt" ::1/128; else install "$ipt" 127.0.0.0/8; fi
done
