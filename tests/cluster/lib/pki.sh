# shellcheck shell=bash
# Self-made CA and certificates for the local control plane (sourced by up.sh).
# EC P-256 keys: fast to generate, accepted by every component.

_new_key() { [[ -f $1 ]] || openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }

ensure_ca() {
  [[ -f $PKI_DIR/ca.crt && -f $PKI_DIR/ca.key ]] && return 0
  _new_key "$PKI_DIR/ca.key"
  openssl req -x509 -new -sha256 -days 3650 -key "$PKI_DIR/ca.key" -subj "/CN=lft-local-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$PKI_DIR/ca.crt" 2>/dev/null
}

# ensure_cert NAME SUBJECT EKU [SAN]: PKI_DIR/NAME.{key,crt} signed by the CA.
ensure_cert() {
  local name=$1 subj=$2 eku=$3 san=${4:-} ext
  [[ -f $PKI_DIR/$name.crt && -f $PKI_DIR/$name.key ]] && return 0
  _new_key "$PKI_DIR/$name.key"
  ext=$(mktemp)
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -z $san ]] || echo "subjectAltName=$san"
  } >"$ext"
  openssl req -new -key "$PKI_DIR/$name.key" -subj "$subj" 2>/dev/null |
    openssl x509 -req -sha256 -days 3650 -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
      -set_serial "0x$(openssl rand -hex 12)" -extfile "$ext" -out "$PKI_DIR/$name.crt" 2>/dev/null
  rm -f "$ext"
}

# write_kubeconfig FILE SERVER CERTNAME: a kubeconfig with embedded credentials.
write_kubeconfig() {
  local file=$1 server=$2 cert=$3 tmp
  tmp=$(mktemp "$file.XXXX")
  cat >"$tmp" <<KC
apiVersion: v1
kind: Config
clusters:
- name: lft
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 <"$PKI_DIR/ca.crt")
users:
- name: $cert
  user:
    client-certificate-data: $(base64 -w0 <"$PKI_DIR/$cert.crt")
    client-key-data: $(base64 -w0 <"$PKI_DIR/$cert.key")
contexts:
- name: lft
  context:
    cluster: lft
    user: $cert
    namespace: default
current-context: lft
KC
  chmod 0600 "$tmp"
  mv "$tmp" "$file"
}

# All certificates, keys and kubeconfigs the control plane needs. NODE_IP must be set.
ensure_pki() {
  mkdir -p "$PKI_DIR"
  chmod 0700 "$PKI_DIR"
  # The serving cert names the docker bridge address (NODE_IP): reissue it if the bridge moved.
  if [[ "$(cat "$PKI_DIR/node-ip" 2>/dev/null)" != "$NODE_IP" ]]; then
    rm -f "$PKI_DIR"/kube-apiserver.{crt,key}
    echo "$NODE_IP" >"$PKI_DIR/node-ip"
  fi
  ensure_ca
  ensure_cert kube-apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,IP:$NODE_IP,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  # Client identities; the names/groups are the ones RBAC's bootstrap policy binds.
  ensure_cert admin "/O=system:masters/CN=lft-admin" clientAuth
  ensure_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  ensure_cert kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
  # Service-account token signing key.
  if [[ ! -f $PKI_DIR/sa.key ]]; then
    openssl genrsa -out "$PKI_DIR/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null
  fi
  # Users reach the API at 127.0.0.1 (DNAT to NODE_IP); the controller manager goes direct.
  write_kubeconfig "$KUBECONFIG_PATH" "https://127.0.0.1:$APISERVER_PORT" admin
  write_kubeconfig "$CLUSTER_DIR/kube-controller-manager.kubeconfig" "https://$NODE_IP:$APISERVER_PORT" \
    kube-controller-manager
}
