#!/usr/bin/env bash
# Print the tail of every control plane component log (etcd, kube-apiserver, kube-controller-manager; and dockerd's).
#   tests/cluster/logs.sh [-n LINES] [-f] [COMPONENT...]
# -f follows the logs (tail -F) instead of printing and exiting.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/cluster/lib/common.sh
source "$here/lib/common.sh"

lines=50 follow=0
while getopts "n:fh" opt; do
  case $opt in
    n) lines=$OPTARG ;;
    f) follow=1 ;;
    *) sed -n '2,4p' "$0"; exit 0 ;;
  esac
done
shift $((OPTIND - 1))
names=("$@")
((${#names[@]})) || names=("${COMPONENTS[@]}")

files=()
for n in "${names[@]}"; do
  [[ -f $LOG_DIR/$n.log ]] && files+=("$LOG_DIR/$n.log")
done
(($#)) || [[ ! -f $LFT_STATE/logs/dockerd.log ]] || files+=("$LFT_STATE/logs/dockerd.log")
((${#files[@]})) || { echo "no logs in $LOG_DIR" >&2; exit 0; }

if ((follow)); then
  exec tail -n "$lines" -F "${files[@]}"
fi
for f in "${files[@]}"; do
  echo "===== $f (last $lines lines) ====="
  tail -n "$lines" "$f"
done
