"""The Pod Security Standards' "restricted" profile (baseline included), as a check of a pod template.

Written from https://kubernetes.io/docs/concepts/security/pod-security-standards/ (the controls of
v1.28+). A unit-level mirror of the real Pod Security admission, for tests without an API server (the
policy's allowed volume kinds, every builder's variant); tests/integration/test_operator_pod_security.py
ties it to the admission itself: what it passes, the API server admits under enforced "restricted".
Returns the violations, one line each.
"""

from __future__ import annotations

from typing import Any

RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
APPARMOR_PREFIX = "container.apparmor.security.beta.kubernetes.io/"
SECCOMP_ANNOTATIONS = ("seccomp.security.alpha.kubernetes.io/pod", "container.seccomp.security.alpha.kubernetes.io/")


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]


def _pod_level(pod: dict[str, Any]) -> list[str]:
    out = [f"spec.{field}" for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field)]
    psc = pod.get("securityContext") or {}
    out += [f"sysctl {s.get('name')}" for s in psc.get("sysctls", []) if s.get("name") not in SAFE_SYSCTLS]
    for volume in pod.get("volumes", []):
        kinds = [k for k in volume if k != "name"] or ["emptyDir"]
        out += [f"volume {volume.get('name')}: {kind}" for kind in kinds if kind not in RESTRICTED_VOLUMES]
    if psc.get("runAsUser") == 0:
        out.append("pod runAsUser 0")
    if (psc.get("seLinuxOptions") or {}).get("user") or (psc.get("seLinuxOptions") or {}).get("role"):
        out.append("pod seLinuxOptions user/role")
    return out


def _container_level(pod: dict[str, Any], c: dict[str, Any]) -> list[str]:
    psc = pod.get("securityContext") or {}
    sc = c.get("securityContext") or {}
    name = c.get("name")
    out: list[str] = []
    if sc.get("privileged"):
        out.append(f"{name}: privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append(f"{name}: allowPrivilegeEscalation is not false")
    if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
        out.append(f"{name}: runAsNonRoot is not true")
    if sc.get("runAsUser") == 0:
        out.append(f"{name}: runAsUser 0")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        out.append(f"{name}: seccompProfile {seccomp}")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        out.append(f"{name}: capabilities do not drop ALL")
    out += [f"{name}: adds capability {cap}" for cap in caps.get("add") or [] if cap != "NET_BIND_SERVICE"]
    out += [f"{name}: hostPort" for port in c.get("ports", []) if port.get("hostPort")]
    if sc.get("procMount") not in (None, "Default"):
        out.append(f"{name}: procMount {sc['procMount']}")
    return out


def _annotations(annotations: dict[str, str]) -> list[str]:
    out: list[str] = []
    for key, value in annotations.items():
        if key.startswith(APPARMOR_PREFIX) and value != "runtime/default" and not value.startswith("localhost/"):
            out.append(f"annotation {key}: {value}")
        if key.startswith(SECCOMP_ANNOTATIONS) and value not in ("runtime/default", "docker/default") and not (
            value.startswith("localhost/")
        ):
            out.append(f"annotation {key}: {value}")
    return out


def restricted_violations(template: dict[str, Any]) -> list[str]:
    """Violations of Pod Security "restricted" by a pod template ({metadata, spec}); empty: compliant."""
    pod = template.get("spec") or {}
    out = _pod_level(pod)
    for c in _containers(pod):
        out += _container_level(pod, c)
    return out + _annotations((template.get("metadata") or {}).get("annotations") or {})
