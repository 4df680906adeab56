#!/bin/sh
# The runc these machines run containers with (one file, two places): hack/docker.sh installs it as Docker's
# runtime (/usr/local/lib/lft/runc-oomfix), and the offline kind node image as the node's
# runc (/usr/local/sbin/runc, before Debian's on containerd's PATH; hack/kind/base.Dockerfile). It edits the OCI
# bundle (create/run) or process spec (exec), then hands over to Debian's runc:
# - negative oom_score_adj writes fail with EIO here: process.oomScoreAdj is clamped to 0;
# - where the capability bounding set lacks CAP_SYS_RESOURCE (these machines, and so every container on them),
#   a privileged container (kind's nodes; kube-proxy inside them) asks for it and runc fails with "unable to
#   apply caps: operation not permitted": it is dropped from the spec, as there is none to give.
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
no_sys_resource=$(( (0x$bnd >> 24 & 1) == 0 ))
fix() {
  [ -f "$1" ] || return 0
  sed -i -E 's/("oomScoreAdj"[[:space:]]*:[[:space:]]*)-[0-9]+/\10/g' "$1"
  if [ "$no_sys_resource" = 1 ] && grep -q CAP_SYS_RESOURCE "$1"; then
    jq -c 'walk(if type == "array" then map(select(. != "CAP_SYS_RESOURCE")) else . end)' "$1" >"$1.lft" &&
      mv -f "$1.lft" "$1"
  fi
  return 0
}
case "$cmd" in
  create|run) fix "$bundle/config.json" ;;
  exec) [ -n "$process" ] && fix "$process" ;;
esac
exec /usr/sbin/runc "$@"
