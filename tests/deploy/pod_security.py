"""The Pod Security Standards (kubernetes.io/docs/concepts/security/pod-security-standards/),
checked on a pod spec offline: which of `baseline` and `restricted` it passes, as the Pod
Security admission of a namespace labelled `pod-security.kubernetes.io/enforce: LEVEL` would
judge it (Linux pods; the policies' latest version).
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

LEVELS = ("restricted", "baseline", "privileged")  # strictest first

BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)


def _containers(pod: Obj) -> list[Obj]:
    return [
        c
        for key in ("initContainers", "containers", "ephemeralContainers")
        for c in pod.get(key) or []
    ]


def _baseline(pod: Obj) -> list[str]:
    found: list[str] = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            found.append(f"{field}: true")
    pod_sc = pod.get("securityContext") or {}
    for volume in pod.get("volumes") or []:
        if "hostPath" in volume:
            found.append(f"volume {volume.get('name')}: hostPath {volume['hostPath'].get('path')}")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl.get('name')}")
    contexts = [("pod", pod_sc)]
    for c in _containers(pod):
        name = c.get("name")
        sc = c.get("securityContext") or {}
        contexts.append((f"container {name}", sc))
        if sc.get("privileged"):
            found.append(f"container {name}: privileged")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            found.append(f"container {name}: adds {sorted(added - BASELINE_CAPABILITIES)}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"container {name}: hostPort {port['hostPort']}")
        if sc.get("procMount") not in (None, "Default"):
            found.append(f"container {name}: procMount {sc['procMount']}")
    for where, sc in contexts:
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            found.append(f"{where}: hostProcess")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            found.append(f"{where}: seccomp Unconfined")
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            found.append(f"{where}: AppArmor Unconfined")
        selinux = sc.get("seLinuxOptions") or {}
        if (
            selinux.get("type", "") not in SELINUX_TYPES
            or selinux.get("user")
            or selinux.get("role")
        ):
            found.append(f"{where}: seLinuxOptions {selinux}")
    return found


def _restricted(pod: Obj) -> list[str]:
    found: list[str] = []
    pod_sc = pod.get("securityContext") or {}
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume.get('name')}: {sorted(kinds)}")
    if pod_sc.get("runAsUser") == 0:
        found.append("pod: runAsUser 0")
    for c in _containers(pod):
        name = c.get("name")
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"container {name}: allowPrivilegeEscalation is not false")
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root is not True:
            found.append(f"container {name}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            found.append(f"container {name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"container {name}: seccomp {seccomp}")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            found.append(f"container {name}: does not drop ALL capabilities")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"container {name}: adds {sorted(caps['add'])}")
    return found


def violations(pod: Obj, level: str) -> list[str]:
    """What keeps the pod spec from `level` ([] if it passes)."""
    if level == "privileged":
        return []
    found = _baseline(pod)
    if level == "restricted":
        found += _restricted(pod)
    return found


def level_of(pod: Obj) -> str:
    """The strictest level the pod spec passes."""
    return next(level for level in LEVELS if not violations(pod, level))
