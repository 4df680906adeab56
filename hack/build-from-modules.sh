#!/usr/bin/env bash
# build-k8s.sh - build Kubernetes (+ etcd, containerd, CNI plugins, crictl, kind, coredns, kueue, registry, oras, actionlint, krew)
# from the Go module proxy only (no git clone, no release tarballs).
#
# Usage:  build-k8s.sh [component ...]
#   components: k8s etcd containerd cni crictl kind coredns kueue registry oras actionlint krew   (default: k8s etcd)
#   "all" = every component.
#
# Idempotent: a binary that already exists is skipped (delete it to rebuild).
# Everything (module cache, build cache, wrapper modules, binaries) lives under $LFT_CACHE:
#   $LFT_CACHE/gomod                GOMODCACHE  (~1.6 GiB with everything downloaded)
#   $LFT_CACHE/gobuild              GOCACHE
#   $LFT_CACHE/work/<comp>-<ver>/   generated wrapper go.mod/go.sum
#   $LFT_CACHE/k8s/<ver>/           kube-apiserver kube-controller-manager kube-scheduler
#                                   kube-proxy kubelet kubectl
#   $LFT_CACHE/etcd/<ver>/          etcd etcdctl etcdutl
#   $LFT_CACHE/containerd/<ver>/    containerd containerd-shim-runc-v2 ctr
#   $LFT_CACHE/cni/<ver>/           bridge host-local loopback portmap
#   $LFT_CACHE/crictl/<ver>/        crictl
#   $LFT_CACHE/kind/<ver>/          kind
#   $LFT_CACHE/coredns/<ver>/       coredns (the cluster DNS of a kind node image, hack/kind/node-image.sh)
#   $LFT_CACHE/kueue/<ver>/         kueue (the controller manager)
#   $LFT_CACHE/registry/<ver>/      registry (github.com/distribution/distribution: an OCI registry)
#   $LFT_CACHE/oras/<ver>/          oras (the OCI artifact CLI)
#   $LFT_CACHE/actionlint/<ver>/    actionlint (GitHub Actions workflow linter)
#   $LFT_CACHE/krew/<ver>/          krew, validate-krew-manifest (the kubectl plugin manager, its manifest check)
# (<ver> is written without the leading "v", e.g. k8s/1.37.2, like the existing k8s/1.20.2.)
#
# Env knobs (defaults in brackets):
#   LFT_CACHE [/var/cache/lft]  K8S_VERSION [v1.37.2]  ETCD_VERSION [v3.7.4]
#   CONTAINERD_VERSION [v2.4.2] CNI_PLUGINS_VERSION [v1.10.0] CRICTL_VERSION [v1.37.0]
#   KIND_VERSION [v0.33.0]      KUEUE_VERSION [v0.17.0]     REGISTRY_VERSION [v3.1.2]
#   COREDNS_VERSION [v1.15.0]
#   ORAS_VERSION [v1.3.6]       ACTIONLINT_VERSION [v1.7.12] KREW_VERSION [v0.4.3]
#   GO [/usr/local/go/bin/go]   LFT_NICE ["nice -n 19"]  GOMAXPROCS [1]  GOFLAGS [-p=1]
#   GOTOOLCHAIN [auto]: if a go.mod needs a newer Go than $GO, the go command fetches
#       golang.org/toolchain@v0.0.1-goX.Y.Z.linux-amd64 from the module proxy into GOMODCACHE.
#       Set GOTOOLCHAIN=local to forbid that, or e.g. GOTOOLCHAIN=go1.27.3 to force one.
set -euo pipefail

LFT_CACHE=${LFT_CACHE:-/var/cache/lft}
K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.7.4}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION:-v1.10.0}
CRICTL_VERSION=${CRICTL_VERSION:-v1.37.0}
KIND_VERSION=${KIND_VERSION:-v0.33.0}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
KUEUE_VERSION=${KUEUE_VERSION:-v0.17.0}
REGISTRY_VERSION=${REGISTRY_VERSION:-v3.1.2}
ORAS_VERSION=${ORAS_VERSION:-v1.3.6}
ACTIONLINT_VERSION=${ACTIONLINT_VERSION:-v1.7.12}
KREW_VERSION=${KREW_VERSION:-v0.4.3}
GO=${GO:-/usr/local/go/bin/go}
read -r -a NICE <<<"${LFT_NICE-nice -n 19}"

export GOMODCACHE=$LFT_CACHE/gomod
export GOCACHE=$LFT_CACHE/gobuild
export GOPATH=$LFT_CACHE/gopath
export GOMAXPROCS=${GOMAXPROCS:-1}
export GOFLAGS=${GOFLAGS:--p=1}
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
export CGO_ENABLED=0
export PATH=$(dirname "$GO"):$PATH

command -v jq >/dev/null || { echo "build-k8s.sh: jq is required (apt-get install jq)" >&2; exit 1; }
mkdir -p "$LFT_CACHE"
exec 9>"$LFT_CACHE/.build-k8s.lock"
flock 9

log() { echo "[build-k8s $(date -u +%H:%M:%S)] $*" >&2; }
g() { "${NICE[@]}" "$GO" "$@"; }

# modinfo <module@version> <jq field>  (downloads the module's .info/.mod/.zip if needed)
modinfo() { g mod download -json "$1" | jq -r ".$2"; }
# module publish time (tag time) in the proxy's .info, used as reproducible buildDate
modtime() { jq -r .Time "$(modinfo "$1" Info)"; }

# build_one <wrapper dir> <output file> <package> <ldflags> [tags]
build_one() {
  local dir=$1 out=$2 pkg=$3 ld=$4 tags=${5:-}
  if [[ -s $out && -x $out ]]; then log "skip $out (exists)"; return 0; fi
  mkdir -p "$(dirname "$out")"
  local s; s=$(date +%s)
  log "go build $pkg -> $out"
  (cd "$dir" && g build -trimpath ${tags:+-tags=$tags} -ldflags "$ld" -o "$out.tmp" "$pkg")
  mv -f "$out.tmp" "$out"
  log "built $(basename "$out") in $(( $(date +%s) - s ))s, $(stat -c %s "$out") bytes"
}

# install_mod <out dir> <ldflags> <tags> <pkg@ver>...   (go install, for modules without replaces)
install_mod() {
  local outdir=$1 ld=$2 tags=$3; shift 3
  local missing=() p
  for p in "$@"; do local n=${p%@*}; n=${n##*/}; [[ -s $outdir/$n ]] || missing+=("$p"); done
  if ((${#missing[@]} == 0)); then log "skip $outdir (all present)"; return 0; fi
  mkdir -p "$outdir"
  local s; s=$(date +%s)
  log "go install ${missing[*]} -> $outdir"
  (cd "$LFT_CACHE" && GOBIN=$outdir g install -trimpath ${tags:+-tags=$tags} -ldflags "$ld" "${missing[@]}")
  log "installed into $outdir in $(( $(date +%s) - s ))s"
}

# ---------------------------------------------------------------- Kubernetes
# k8s.io/kubernetes cannot be "go install"ed (its go.mod has replace => ./staging/...,
# and the staging dirs are not in the module zip).  So: a wrapper module that requires
# k8s.io/kubernetes vX.Y.Z and replaces every staging module with its published v0.Y.Z.
gen_k8s_gomod() {
  local kver=$1 dir=$2 sver="v0.${1#v1.}"
  local gomod j goline
  gomod=$(modinfo "k8s.io/kubernetes@$kver" GoMod)
  j=$(g mod edit -json "$gomod")
  goline=$(jq -r .Go <<<"$j")
  local staging
  mapfile -t staging < <(jq -r '
    ([.Require[]? | select(.Version=="v0.0.0") | .Path] +
     [.Replace[]? | select(.New.Path|startswith("./")) | .Old.Path]) | unique[]' <<<"$j")
  mkdir -p "$dir"
  {
    echo "module lft.local/k8sbuild"; echo
    echo "go $goline"
    jq -r '.GoDebug[]? | "godebug \(.Key)=\(.Value)"' <<<"$j"
    echo; echo "require k8s.io/kubernetes $kver"; echo
    echo "replace ("
    local m
    for m in "${staging[@]}"; do
      if g list -m -json "$m@$sver" >/dev/null 2>&1; then
        echo "	$m => $m $sver"
      else
        log "note: $m@$sver not on the proxy (not needed unless required); no replace" 
      fi
    done
    jq -r '.Replace[]? | select(.New.Path|startswith("./")|not)
      | "	\(.Old.Path)\(if .Old.Version then " "+.Old.Version else "" end) => \(.New.Path)\(if .New.Version then " "+.New.Version else "" end)"' <<<"$j"
    echo ")"
  } >"$dir/go.mod.new"
  mv -f "$dir/go.mod.new" "$dir/go.mod"
}

# K8S_CMDS="kube-apiserver kube-controller-manager" builds a subset (the oldest minor needs no node);
# kubeadm is built only when asked for (K8S_CMDS=kubeadm: the kind node image).
K8S_TOOLS="kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl kubeadm"
read -r -a K8S_CMDS <<<"${K8S_CMDS:-kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl}"

build_k8s() {
  local v=$K8S_VERSION dir=$LFT_CACHE/work/k8s-${K8S_VERSION#v} out=$LFT_CACHE/k8s/${K8S_VERSION#v}
  if [[ ! -s $dir/go.sum ]]; then
    log "generating $dir/go.mod"
    gen_k8s_gomod "$v" "$dir"
    # Every command as a tool, whatever subset is built now: a later build of another one finds its go.sum lines.
    local c; for c in $K8S_TOOLS; do
      (cd "$dir" && g mod edit -tool="k8s.io/kubernetes/cmd/$c"); done
    (cd "$dir" && g mod tidy)
  elif [[ " ${K8S_CMDS[*]} " == *" kubeadm "* ]] && ! grep -q 'k8s.io/kubernetes/cmd/kubeadm' "$dir/go.mod"; then
    # A wrapper module generated before kubeadm was a tool (kind node images need it): add it.
    (cd "$dir" && g mod edit -tool=k8s.io/kubernetes/cmd/kubeadm && g mod tidy)
  fi
  # version variables printed by --version (same set as hack/lib/version.sh)
  local re='^v([0-9]+)\.([0-9]+)\.' major minor bd ld="-s -w" p
  [[ $v =~ $re ]] && { major=${BASH_REMATCH[1]}; minor=${BASH_REMATCH[2]}; }
  bd=$(modtime "k8s.io/kubernetes@$v")
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$bd -X $p.gitCommit=${K8S_GIT_COMMIT:-unknown}"
  done
  local c
  for c in "${K8S_CMDS[@]}"; do
    build_one "$dir" "$out/$c" "k8s.io/kubernetes/cmd/$c" "$ld" "selinux,notest,grpcnotrace"
  done
}

# ---------------------------------------------------------------- etcd
# go.etcd.io/etcd/server/v3 (its root package is etcd's main) and etcdctl/etcdutl have
# replace => ../api etc., so "go install ...@v" is refused; use a wrapper module too.
build_etcd() {
  local v=$ETCD_VERSION dir=$LFT_CACHE/work/etcd-${ETCD_VERSION#v} out=$LFT_CACHE/etcd/${ETCD_VERSION#v}
  if [[ ! -s $dir/go.sum ]]; then
    mkdir -p "$dir"
    local goline
    goline=$(g mod edit -json "$(modinfo "go.etcd.io/etcd/server/v3@$v" GoMod)" | jq -r .Go)
    cat >"$dir/go.mod" <<EOF
module lft.local/etcdbuild

go $goline

require (
	go.etcd.io/etcd/server/v3 $v
	go.etcd.io/etcd/etcdctl/v3 $v
	go.etcd.io/etcd/etcdutl/v3 $v
)

tool (
	go.etcd.io/etcd/server/v3
	go.etcd.io/etcd/etcdctl/v3
	go.etcd.io/etcd/etcdutl/v3
)
EOF
    (cd "$dir" && g mod tidy)
  fi
  local ld="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_GIT_SHA:-$v}"
  build_one "$dir" "$out/etcd"    go.etcd.io/etcd/server/v3  "$ld"
  build_one "$dir" "$out/etcdctl" go.etcd.io/etcd/etcdctl/v3 "$ld"
  build_one "$dir" "$out/etcdutl" go.etcd.io/etcd/etcdutl/v3 "$ld"
}

# ---------------------------------------------------------------- containerd, CNI, crictl, kind, kueue
# These modules have no replace directives, so plain "go install pkg@version" works.
build_containerd() {
  local v=$CONTAINERD_VERSION m=github.com/containerd/containerd/v2
  local ld="-s -w -X $m/version.Version=$v -X $m/version.Revision=${CONTAINERD_REVISION:-unknown} -X $m/version.Package=$m"
  # CGO_ENABLED=0 only drops the btrfs snapshotter (//go:build linux && !no_btrfs && cgo)
  install_mod "$LFT_CACHE/containerd/${v#v}" "$ld" "urfave_cli_no_docs" "$m/cmd/containerd@$v" "$m/cmd/ctr@$v"
  install_mod "$LFT_CACHE/containerd/${v#v}" "$ld" "urfave_cli_no_docs,no_grpc" "$m/cmd/containerd-shim-runc-v2@$v"
}

build_cni() {
  local v=$CNI_PLUGINS_VERSION m=github.com/containernetworking/plugins
  install_mod "$LFT_CACHE/cni/${v#v}" "-s -w -X $m/pkg/utils/buildversion.BuildVersion=$v" "" \
    "$m/plugins/main/bridge@$v" "$m/plugins/ipam/host-local@$v" \
    "$m/plugins/main/loopback@$v" "$m/plugins/meta/portmap@$v"
}

build_crictl() {
  local v=$CRICTL_VERSION
  install_mod "$LFT_CACHE/crictl/${v#v}" "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$v" "" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$v"
}

build_kind() {
  local v=$KIND_VERSION
  install_mod "$LFT_CACHE/kind/${v#v}" "-s -w" "" "sigs.k8s.io/kind@$v"
}

build_coredns() {
  local v=$COREDNS_VERSION
  install_mod "$LFT_CACHE/coredns/${v#v}" "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$v" "" \
    "github.com/coredns/coredns@$v"
}

build_kueue() {
  local v=$KUEUE_VERSION p=sigs.k8s.io/kueue/pkg/version
  install_mod "$LFT_CACHE/kueue/${v#v}" \
    "-s -w -X $p.GitVersion=$v -X $p.BuildDate=$(modtime "sigs.k8s.io/kueue@$v")" "" \
    "sigs.k8s.io/kueue/cmd/kueue@$v"
}

build_registry() {
  local v=$REGISTRY_VERSION m=github.com/distribution/distribution/v3
  install_mod "$LFT_CACHE/registry/${v#v}" "-s -w -X $m/version.version=$v" "" "$m/cmd/registry@$v"
}

build_oras() {
  local v=$ORAS_VERSION
  install_mod "$LFT_CACHE/oras/${v#v}" "-s -w -X oras.land/oras/internal/version.Version=${v#v}" "" "oras.land/oras/cmd/oras@$v"
}

build_krew() {
  local v=$KREW_VERSION
  install_mod "$LFT_CACHE/krew/${v#v}" "-s -w -X sigs.k8s.io/krew/internal/version.gitTag=$v" "" \
    "sigs.k8s.io/krew/cmd/krew@$v" "sigs.k8s.io/krew/cmd/validate-krew-manifest@$v"
}

build_actionlint() {
  local v=$ACTIONLINT_VERSION
  install_mod "$LFT_CACHE/actionlint/${v#v}" "-s -w -X github.com/rhysd/actionlint.version=$v" "" \
    "github.com/rhysd/actionlint/cmd/actionlint@$v"
}

comps=("$@")
((${#comps[@]})) || comps=(k8s etcd)
[[ ${comps[0]} == all ]] && comps=(k8s etcd containerd cni crictl kind coredns kueue registry oras actionlint krew)
for c in "${comps[@]}"; do
  case $c in
    k8s|etcd|containerd|cni|crictl|kind|coredns|kueue|registry|oras|actionlint|krew) "build_$c" ;;
    *) echo "unknown component: $c" >&2; exit 2 ;;
  esac
done
log "done: ${comps[*]}"
