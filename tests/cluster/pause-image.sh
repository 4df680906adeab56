#!/usr/bin/env bash
# Build the pod sandbox image ($PAUSE_IMAGE, default lft/pause:1) from
# pause/pause.c: a static binary in an otherwise empty rootfs, `docker import`ed.
# hack/kind/node-image.sh puts it into the kind node image as containerd's sandbox image.
# A no-op when the image exists. Needs a running Docker (hack/docker.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/cluster/lib/common.sh
source "$here/lib/common.sh"

DOCKER=${DOCKER:-docker}
"$DOCKER" image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 && exit 0
command -v gcc >/dev/null || ensure_debs gcc libc6-dev
[[ -f /usr/lib/x86_64-linux-gnu/libc.a ]] || ensure_debs libc6-dev
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs"
gcc -static -Os -s -o "$work/rootfs/pause" "$here/pause/pause.c"
tar -C "$work/rootfs" -cf "$work/pause.tar" pause
"$DOCKER" import -c 'ENTRYPOINT ["/pause"]' "$work/pause.tar" "$PAUSE_IMAGE" >/dev/null
log "built $PAUSE_IMAGE"
