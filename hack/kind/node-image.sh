#!/usr/bin/env bash
# Build a kind node image offline: $LFT_KIND_NODE_IMAGE (default lft/kind-node:<Kubernetes version>).
#
# kind's own node images come from a registry these machines cannot reach, and `kind build node-image`
# pulls etcd, CoreDNS, pause and kindnetd from registries too. So this script does what kind's node-image
# builder does, from what is reachable here:
#   1. binaries from the Go module proxy (hack/build-from-modules.sh): Kubernetes with kubeadm, containerd,
#      crictl, the CNI plugins, and etcd and CoreDNS at the versions `kubeadm config images list` names;
#   2. a base image (hack/kind/base.Dockerfile): kind's images/base files from the kind module, Debian's
#      systemd/runc/iptables, the binaries of 1;
#   3. the images kubeadm runs, built from those binaries and tagged as kubeadm expects
#      (registry.k8s.io/kube-apiserver:<version>, .../etcd:<tag>, .../coredns/coredns:<tag>), our pause
#      image, and lft-node-net (hack/kind/node-net.sh: the pod network, since kindnetd is not on the proxy);
#   4. the node image: the base with kubeadm/kubelet/kubectl in /usr/bin, /kind/version, the CNI manifest,
#      and the images of 3 imported into its containerd (pinned), committed as kind's builder does.
# Cached: the image carries a key (a hash of the recipe and the versions); with the same key nothing is done.
#
# Usage: hack/kind/node-image.sh [--force]
#   env: K8S_VERSION [v1.37.2], KIND_VERSION [v0.33.0], LFT_CACHE [/var/cache/lft], DOCKER [docker]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export LFT_CACHE=${LFT_CACHE:-/var/cache/lft}
export K8S_VERSION=${K8S_VERSION:-v1.37.2}
export KIND_VERSION=${KIND_VERSION:-v0.33.0}
export CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2} CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION:-v1.10.0}
export CRICTL_VERSION=${CRICTL_VERSION:-v1.37.0}
DOCKER=${DOCKER:-docker}
NODE_IMAGE=${LFT_KIND_NODE_IMAGE:-lft/kind-node:$K8S_VERSION}
PAUSE_IMAGE=lft/pause:1
FORCE=0; [[ ${1:-} == --force ]] && FORCE=1
log() { echo "[kind-node-image $(date -u +%H:%M:%S)] $*" >&2; }
start=$SECONDS

k8s=$LFT_CACHE/k8s/${K8S_VERSION#v}
K8S_CMDS="kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl kubeadm" \
  bash "$root/hack/build-from-modules.sh" k8s containerd cni crictl kind
# etcd and CoreDNS at the tags this kubeadm pulls (e.g. registry.k8s.io/etcd:3.7.0-0, coredns/coredns:v1.14.6).
mapfile -t wanted < <("$k8s/kubeadm" config images list --kubernetes-version "$K8S_VERSION")
etcd_tag= dns_tag=
for ref in "${wanted[@]}"; do
  case $ref in
    */etcd:*) etcd_tag=${ref##*:} ;;
    */coredns:*) dns_tag=${ref##*:} ;;
  esac
done
[[ -n $etcd_tag && -n $dns_tag ]] || { log "kubeadm named no etcd/CoreDNS image: ${wanted[*]}"; exit 1; }
export ETCD_VERSION=v${etcd_tag%-*} COREDNS_VERSION=$dns_tag
bash "$root/hack/build-from-modules.sh" etcd coredns

kind_files=$LFT_CACHE/gomod/sigs.k8s.io/kind@$KIND_VERSION/images/base/files
[[ -d $kind_files ]] || GOMODCACHE=$LFT_CACHE/gomod GOFLAGS=-mod=mod ${GO:-/usr/local/go/bin/go} mod download "sigs.k8s.io/kind@$KIND_VERSION"
[[ -d $kind_files ]] || { log "missing $kind_files (kind's module)"; exit 1; }
key=$( { cat "$here/base.Dockerfile" "$root/hack/runc-wrapper.sh" "$here/node-net.sh" "$here/cni.yaml" "${BASH_SOURCE[0]}";
         echo "$K8S_VERSION $KIND_VERSION $CONTAINERD_VERSION $CNI_PLUGINS_VERSION $CRICTL_VERSION $etcd_tag $dns_tag";
         "$DOCKER" image inspect -f '{{.Id}}' lft/base:bookworm; } | sha256sum | cut -c1-16)
have=$("$DOCKER" image inspect -f '{{ index .Config.Labels "lft.kind.key" }}' "$NODE_IMAGE" 2>/dev/null || true)
if [[ $FORCE == 0 && $have == "$key" ]]; then log "$NODE_IMAGE is up to date (key $key)"; exit 0; fi

work=$(mktemp -d "$LFT_CACHE/kind-node.XXXXXX")
builder=lft-kind-node-build-$$
cleanup() { "$DOCKER" rm -f "$builder" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# 2. the base
base=lft/kind-base:$key
if ! "$DOCKER" image inspect "$base" >/dev/null 2>&1; then
  mkdir -p "$work/base/bin" "$work/base/cni"
  cp -r "$kind_files" "$work/base/files" && chmod -R u+w "$work/base/files"
  cp "$LFT_CACHE/containerd/${CONTAINERD_VERSION#v}"/{containerd,ctr,containerd-shim-runc-v2} \
     "$LFT_CACHE/crictl/${CRICTL_VERSION#v}/crictl" "$work/base/bin/"
  cp "$LFT_CACHE/cni/${CNI_PLUGINS_VERSION#v}"/* "$work/base/cni/"
  cp "$root/hack/runc-wrapper.sh" "$work/base/"
  log "building $base"
  "$DOCKER" build -q -t "$base" -f "$here/base.Dockerfile" "$work/base" >/dev/null
fi

# 3. the images kubeadm runs (static Go binaries: an image of the binary alone, as upstream's distroless
# ones are in effect), kube-proxy with iptables/conntrack, our pause, the pod network.
bash "$root/tests/cluster/pause-image.sh"
img() {  # img <tag> <dir>: docker build of <dir>/Dockerfile
  "$DOCKER" build -q -t "$1" "$2" >/dev/null && log "image $1"
}
static_image() {  # static_image <tag> <entry binary> <binary>...
  local tag=$1 entry=$2 d; shift 2
  d=$(mktemp -d "$work/img.XXXXXX"); cp "$@" "$d/"
  { echo "FROM scratch"; for b in "$@"; do echo "COPY $(basename "$b") /usr/local/bin/"; done
    echo "ENV PATH=/usr/local/bin"; echo "ENTRYPOINT [\"/usr/local/bin/$entry\"]"; } >"$d/Dockerfile"
  img "$tag" "$d"
}
reg=registry.k8s.io
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  static_image "$reg/$c:$K8S_VERSION" "$c" "$k8s/$c"
done
static_image "$reg/etcd:$etcd_tag" etcd "$LFT_CACHE/etcd/${ETCD_VERSION#v}"/{etcd,etcdctl}
static_image "$reg/coredns/coredns:$dns_tag" coredns "$LFT_CACHE/coredns/${COREDNS_VERSION#v}/coredns"
d=$work/kube-proxy; mkdir -p "$d"; cp "$k8s/kube-proxy" "$d/"
cat >"$d/Dockerfile" <<DOCKERFILE
FROM $base
COPY kube-proxy /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/kube-proxy"]
DOCKERFILE
img "$reg/kube-proxy:$K8S_VERSION" "$d"
net_image=docker.io/lft/kind-node-net:$key
d=$work/node-net; mkdir -p "$d"; cp "$k8s/kubectl" "$here/node-net.sh" "$d/"
cat >"$d/Dockerfile" <<DOCKERFILE
FROM $base
COPY kubectl /usr/local/bin/
COPY node-net.sh /usr/local/bin/lft-node-net
ENTRYPOINT ["/usr/local/bin/lft-node-net"]
DOCKERFILE
img "$net_image" "$d"
images=("$reg/kube-apiserver:$K8S_VERSION" "$reg/kube-controller-manager:$K8S_VERSION"
        "$reg/kube-scheduler:$K8S_VERSION" "$reg/kube-proxy:$K8S_VERSION" "$reg/etcd:$etcd_tag"
        "$reg/coredns/coredns:$dns_tag" "docker.io/$PAUSE_IMAGE" "$net_image")
"$DOCKER" tag "$PAUSE_IMAGE" "docker.io/$PAUSE_IMAGE"
"$DOCKER" save -o "$work/images.tar" "${images[@]}"
log "saved ${#images[@]} images ($(du -h "$work/images.tar" | cut -f1))"

# 4. the node image
sed "s#NODE_NET_IMAGE#$net_image#" "$here/cni.yaml" >"$work/default-cni.yaml"
echo "$K8S_VERSION" >"$work/version"
"$DOCKER" run -d --privileged --name "$builder" --entrypoint sleep "$base" infinity >/dev/null
for b in kubeadm kubelet kubectl; do "$DOCKER" cp "$k8s/$b" "$builder:/usr/bin/$b"; done
"$DOCKER" exec "$builder" mkdir -p /kind/manifests
"$DOCKER" cp "$work/default-cni.yaml" "$builder:/kind/manifests/default-cni.yaml"
"$DOCKER" cp "$work/version" "$builder:/kind/version"
"$DOCKER" exec "$builder" bash -c 'nohup containerd >/tmp/containerd.log 2>&1 &
  for i in $(seq 50); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done
  cat /tmp/containerd.log; exit 1'
"$DOCKER" exec -i "$builder" ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned \
  --no-unpack --digests - <"$work/images.tar" >/dev/null
"$DOCKER" exec "$builder" ctr --namespace=k8s.io images list -q | sort >&2
# (PID 1 is sleep, which reaps nothing: a stopped containerd stays a zombie, which counts as stopped.)
"$DOCKER" exec "$builder" bash -c 'pkill -x containerd
  for i in $(seq 150); do ps -C containerd -o stat= | grep -qv Z || exit 0; sleep 0.2; done
  echo "containerd did not stop:"; ps -ef; exit 1'
"$DOCKER" exec "$builder" rm -f /tmp/containerd.log
"$DOCKER" commit \
  --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' --change 'CMD []' \
  --change "LABEL lft.kind.key=$key" --change "LABEL org.opencontainers.image.description=\"kind node $K8S_VERSION, built offline\"" \
  "$builder" "$NODE_IMAGE" >/dev/null
log "built $NODE_IMAGE (key $key) in $((SECONDS - start)) s"
