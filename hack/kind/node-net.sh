#!/bin/bash
# lft-node-net: the pod network of a kind cluster whose node image is built offline
# (hack/kind/node-image.sh). It does what kind's kindnetd does, which is not published on the Go module
# proxy (sigs.k8s.io/kind/images/kindnetd: 404): on each node, a CNI bridge config for the node's
# spec.podCIDR, a route to every other node's podCIDR through that node's InternalIP, and masquerade for
# pod traffic leaving the pod network. It re-reads the nodes every few seconds, so a node that comes back
# with another address (docker stop/start) is routed again.
set -u
: "${NODE_NAME:?}" "${POD_SUBNET:?}"
sa=/var/run/secrets/kubernetes.io/serviceaccount
server=https://${CONTROL_PLANE_ENDPOINT:-${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}}
conf=/etc/cni/net.d/10-lft-bridge.conflist
nodes='{range .items[*]}{.metadata.name}{" "}{.spec.podCIDR}{" "}{.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}'
sysctl -qw net.ipv4.ip_forward=1
modprobe br_netfilter 2>/dev/null || true
sysctl -qw net.bridge.bridge-nf-call-iptables=1 || true
while true; do
  if list=$(kubectl --server="$server" --certificate-authority="$sa/ca.crt" --token="$(cat "$sa/token")" \
      get nodes -o jsonpath="$nodes"); then
    while read -r name cidr ip; do
      [[ -n $cidr && -n $ip ]] || continue
      if [[ $name == "$NODE_NAME" ]]; then
        want=$(printf '{"cniVersion":"1.0.0","name":"lft","plugins":[{"type":"bridge","bridge":"lft0","isGateway":true,"ipMasq":false,"hairpinMode":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"%s"}]],"routes":[{"dst":"0.0.0.0/0"}]}},{"type":"portmap","capabilities":{"portMappings":true}}]}' "$cidr")
        if [[ "$(cat "$conf" 2>/dev/null)" != "$want" ]]; then
          printf '%s\n' "$want" >"$conf.tmp" && mv "$conf.tmp" "$conf" && echo "$(date -u +%T) CNI config for $cidr"
        fi
      elif [[ "$(ip route show "$cidr")" != *"via $ip "* ]]; then
        ip route replace "$cidr" via "$ip" && echo "$(date -u +%T) route $cidr via $ip ($name)"
      fi
    done <<<"$list"
    iptables -t nat -C POSTROUTING -s "$POD_SUBNET" ! -d "$POD_SUBNET" -j MASQUERADE 2>/dev/null ||
      iptables -t nat -A POSTROUTING -s "$POD_SUBNET" ! -d "$POD_SUBNET" -j MASQUERADE
  else
    echo "$(date -u +%T) cannot list nodes; retrying" >&2
  fi
  sleep 3
done
