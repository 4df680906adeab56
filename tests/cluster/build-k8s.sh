#!/usr/bin/env bash
# Build the Kubernetes 1.20 server binaries + kubectl from Debian bookworm's
# `kubernetes` source package (offline, with Debian's Go) into
# $LFT_CACHE/k8s/<version>/. A no-op when those binaries are already cached.
set -euo pipefail
# shellcheck source=tests/cluster/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

SRC_ROOT=$LFT_CACHE/src
TREE=$SRC_ROOT/k8s-$K8S_VERSION
DEB_SRC_LIST=/etc/apt/sources.list.d/lft-deb-src.sources

have_bins() {
  local b
  for b in "${K8S_BINS[@]}"; do [[ -x $K8S_BIN_DIR/$b ]] || return 1; done
}

ensure_deb_src() {
  [[ -f $DEB_SRC_LIST ]] && return 0
  log "adding deb-src entry for bookworm main"
  cat >"$DEB_SRC_LIST" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get -o DPkg::Lock::Timeout=600 update -q >&2
}

fetch_source() {
  [[ -f $TREE/.lft-prepared ]] && return 0
  ensure_deb_src
  mkdir -p "$SRC_ROOT"
  local dsc
  (cd "$SRC_ROOT" && { ls kubernetes_*.dsc >/dev/null 2>&1 || apt-get source --download-only kubernetes >&2; })
  dsc=$(find "$SRC_ROOT" -maxdepth 1 -name 'kubernetes_*.dsc' | sort | tail -n1)
  # The package is "1.20.5+really1.20.2": make sure it is the version we key on.
  grep -q "really$K8S_VERSION" <<<"$dsc" || die "source package $dsc is not Kubernetes $K8S_VERSION"
  rm -rf "$TREE"
  log "unpacking $dsc (with Debian's patches)"
  dpkg-source -x "$dsc" "$TREE" >&2
  # Vendored reflect2 1.0.1 breaks under Go >= 1.18 (apiserver panics encoding
  # maps, kubectl crashes): swap in Debian's 1.0.2 sources.
  local r2=/usr/share/gocode/src/github.com/modern-go/reflect2
  [[ -d $r2 ]] || die "$r2 missing (golang-github-modern-go-reflect2-dev)"
  rm -rf "$TREE/vendor/github.com/modern-go/reflect2"
  cp -r "$r2" "$TREE/vendor/github.com/modern-go/reflect2"
  touch "$TREE/.lft-prepared"
}

build() {
  local whats=() b
  for b in "${K8S_BINS[@]}"; do whats+=("cmd/$b"); done
  # Same setup as Debian's debian/rules: GOPATH inside the tree, static binaries.
  mkdir -p "$TREE/.go/src/k8s.io"
  [[ -L $TREE/.go/src/k8s.io/kubernetes ]] || ln -s ../../.. "$TREE/.go/src/k8s.io/kubernetes"
  log "building ${whats[*]} (several minutes of CPU on a cold cache)"
  (
    cd "$TREE"
    export GOPATH=$TREE/.go CGO_ENABLED=0 PATH=/usr/lib/go/bin:$PATH
    # Kubernetes' make keeps its Go build cache in _output/local/go/cache of the tree.
    export HOME=$LFT_CACHE/home
    mkdir -p "$HOME"
    nice -n 5 make WHAT="${whats[*]}" >&2
  )
  local tmp=$K8S_BIN_DIR.tmp.$$
  rm -rf "$tmp"
  mkdir -p "$tmp"
  for b in "${K8S_BINS[@]}"; do cp "$TREE/_output/bin/$b" "$tmp/"; done
  rm -rf "$K8S_BIN_DIR"
  mv "$tmp" "$K8S_BIN_DIR"
}

main() {
  have_bins && return 0
  mkdir -p "$LFT_CACHE/k8s"
  # One build at a time, even if several callers race here.
  exec 9>"$LFT_CACHE/k8s/.build.lock"
  flock 9
  have_bins && return 0
  ensure_debs golang-go rsync dpkg-dev make golang-github-modern-go-reflect2-dev
  fetch_source
  local t0=$SECONDS
  build
  log "kubernetes $K8S_VERSION binaries ready in $K8S_BIN_DIR ($((SECONDS - t0))s)"
}

main "$@"
