#!/usr/bin/env bash
# Build the base image lft/base:bookworm from Debian's own registry, since no container
# registry is reachable here: debootstrap a minimal bookworm root filesystem, tar it, and
# `docker import` it. Bookworm's python3 is 3.11, the same ABI as the host's python, so
# cp311 wheels downloaded on the host install inside.
#
# Idempotent: the image carries a label with a hash of its recipe; when an image with the
# same hash exists, nothing is done. The tarball is cached outside the clone, keyed by the
# same hash, so a fresh docker daemon re-imports in seconds instead of re-bootstrapping.
#
# Usage: hack/base-image.sh [--force]
#   env: LFT_BASE_IMAGE (default lft/base:bookworm), LFT_CACHE_DIR (default /var/cache/lft),
#        DEBIAN_MIRROR (default http://deb.debian.org/debian), DOCKER (client, default docker)
set -euo pipefail

IMAGE="${LFT_BASE_IMAGE:-lft/base:bookworm}"
CACHE_DIR="${LFT_CACHE_DIR:-/var/cache/lft}/images"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
VARIANT=minbase
# python3-venv brings ensurepip (pip for /opt/venv); ca-certificates for HTTPS to object
# storage; libgomp1 for torch's OpenMP (the CPU wheel bundles one, other builds do not).
PACKAGES=(python3 python3-venv ca-certificates libgomp1 tzdata)
# Bump when the way the rootfs is made (not the package list) changes.
RECIPE_VERSION=1

DOCKER="${DOCKER:-docker}"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

log() { echo "[base-image] $*" >&2; }

KEY=$(printf '%s\n' "$RECIPE_VERSION" "$SUITE" "$VARIANT" "$MIRROR" "${PACKAGES[@]}" | sha256sum | cut -c1-16)
TARBALL="$CACHE_DIR/bookworm-base.tar"
KEYFILE="$CACHE_DIR/bookworm-base.key"

# One build at a time (hack/test-all.sh builds the trainer image and the kind node image in the background).
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.base-image.lock"
flock 9

image_key() { "$DOCKER" image inspect -f '{{ index .Config.Labels "lft.base.key" }}' "$IMAGE" 2>/dev/null || true; }

if [[ $FORCE == 0 && "$(image_key)" == "$KEY" ]]; then
  log "$IMAGE is up to date (key $KEY)"
  exit 0
fi

mkdir -p "$CACHE_DIR"
if [[ $FORCE == 1 || ! -s "$TARBALL" || "$(cat "$KEYFILE" 2>/dev/null)" != "$KEY" ]]; then
  command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >&2
  ROOTFS=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
  cleanup() {
    # debootstrap mounts proc/sys inside the target; never delete through a mount.
    for m in "$ROOTFS"/proc "$ROOTFS"/sys "$ROOTFS"/dev/pts; do
      mountpoint -q "$m" && umount -l "$m" || true
    done
    rm -rf --one-file-system "$ROOTFS"
  }
  trap cleanup EXIT
  log "debootstrap $SUITE ($VARIANT) + ${PACKAGES[*]} from $MIRROR"
  start=$SECONDS
  include=$(IFS=,; echo "${PACKAGES[*]}")
  debootstrap --variant="$VARIANT" --include="$include" "$SUITE" "$ROOTFS" "$MIRROR" >&2
  log "debootstrap took $((SECONDS - start)) s"

  # Trim what a container never needs (apt caches, docs, man pages, non-C locales).
  chroot "$ROOTFS" apt-get clean
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
    "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* "$ROOTFS"/var/cache/debconf/*-old
  find "$ROOTFS"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
  find "$ROOTFS"/usr/lib/python3* -name '__pycache__' -type d -prune -exec rm -rf {} +
  # The host's resolver/hostname must not leak into the image.
  : > "$ROOTFS"/etc/resolv.conf
  : > "$ROOTFS"/etc/hostname

  tar --numeric-owner --xattrs -C "$ROOTFS" -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  echo "$KEY" > "$KEYFILE"
  log "rootfs tarball: $TARBALL ($(du -h "$TARBALL" | cut -f1))"
else
  log "reusing cached tarball $TARBALL (key $KEY)"
fi

"$DOCKER" import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV LANG=C.UTF-8' \
  -c "LABEL lft.base.key=$KEY" \
  -c "LABEL org.opencontainers.image.description=\"Debian $SUITE $VARIANT + python3 (debootstrap)\"" \
  -c 'CMD ["/bin/bash"]' \
  "$TARBALL" "$IMAGE" >&2
log "imported $IMAGE (key $KEY)"
