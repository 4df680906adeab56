#!/usr/bin/env bash
# Copy images from Docker (where hack/build-images.sh builds them) into the cluster's containerd.
#   tests/cluster/load-images.sh IMAGE...
# Nothing is pulled from a registry here: the kubelet finds the images in containerd's k8s.io namespace
# (pods use imagePullPolicy Never/IfNotPresent). An image whose Docker ID was imported before is skipped
# (stamp under $CONTAINERD_ROOT/lft-loaded), so a warm run costs nothing; the trainer image (~6 GB) takes
# about 2 min. A no-op, with a message, when the cluster's containerd is not running.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/cluster/lib/common.sh
source "$here/lib/common.sh"

DOCKER=${DOCKER:-docker}
if [[ ! -S $CONTAINERD_SOCK ]] || ! crictl info >/dev/null 2>&1; then
  log "the cluster's containerd is not running: nothing loaded (tests/cluster/up.sh starts it)"
  exit 0
fi
stamps=$CONTAINERD_ROOT/lft-loaded
mkdir -p "$stamps"
for image in "$@"; do
  id=$("$DOCKER" image inspect -f '{{.Id}}' "$image") || die "no image $image in Docker"
  ref=docker.io/$image
  stamp=$stamps/$(tr '/:' '__' <<<"$image")
  if [[ $(cat "$stamp" 2>/dev/null) == "$id" ]] && [[ -n $(ctr images ls -q "name==$ref") ]]; then
    log "$image already in containerd"
    continue
  fi
  t0=$SECONDS
  "$DOCKER" save "$image" | ctr images import --platform linux/amd64 - >/dev/null
  [[ -n $(ctr images ls -q "name==$ref") ]] || die "containerd has no $ref after the import"
  echo "$id" >"$stamp"
  log "loaded $image into containerd in $((SECONDS - t0)) s"
done
