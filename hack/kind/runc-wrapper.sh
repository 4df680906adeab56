#!/bin/sh
# runc of the offline kind node image (/usr/local/sbin/runc, before Debian's /usr/sbin/runc on containerd's PATH).
# On these machines the capability bounding set lacks CAP_SYS_RESOURCE, so the node container lacks it too (see
# hack/docker.sh) and a privileged pod (kube-proxy, lft-node-net) asking for it makes runc fail with "unable to
# apply caps: operation not permitted". Where the node lacks it, drop it from the spec; then hand over to runc.
bundle=. ; process= ; cmd= ; prev=
for a in "$@"; do
  case "$prev" in
    --bundle|-b) bundle=$a ;;
    --process|-p) process=$a ;;
  esac
  case "$a" in
    --bundle=*) bundle=${a#--bundle=} ;;
    --process=*) process=${a#--process=} ;;
    create|run|exec) [ -z "$cmd" ] && cmd=$a ;;
  esac
  prev=$a
done
bnd=$(awk '/^CapBnd/ {print $2}' /proc/self/status)
fix() {
  [ -f "$1" ] && [ $(( 0x$bnd >> 24 & 1 )) = 0 ] && grep -q CAP_SYS_RESOURCE "$1" || return 0
  jq -c 'walk(if type == "array" then map(select(. != "CAP_SYS_RESOURCE")) else . end)' "$1" >"$1.lft" && mv -f "$1.lft" "$1"
}
case "$cmd" in
  create|run) fix "$bundle/config.json" ;;
  exec) [ -n "$process" ] && fix "$process" ;;
esac
exec /usr/sbin/runc "$@"
