"""What outside the cluster follows an app: names that the objects made or point at, which are
not deterministic (a cloud load balancer's hostname) or must be moved by hand (DNS records).
Pure functions over JSON objects, shared by `mover app diff` (mover_k8s.diff) and the Restore
report (mover_k8s.controller.restore).

Recorded from an object (docs/kubernetes.md, "External names"):

- `loadBalancerHostname`, `loadBalancerIP`: a Service's or an Ingress's
  `status.loadBalancer.ingress` (what a cloud controller or an ingress controller wrote);
- `externalName`: an ExternalName Service's target;
- `ingressHost`: an Ingress's hosts (rules and TLS);
- `externalDNS:hostname`, `externalDNS:internal-hostname`, `externalDNS:target`: the names that
  external-dns makes from its annotations, on any kind.

Pairing (the Restore report): per restored object and family of types (a load balancer's
hostnames and IPs are one family: a hostname may come back as an IP on another cloud), each
recorded value is `same` when the object has it now, else `changed` and paired, in order, with
a current value that was not recorded (or with none when the value is gone while others are
there), else `pending` when the object has no value of that family yet (a LoadBalancer without
ingress, an object not there yet). A current value that pairs with nothing recorded is
`changed` with an empty `recorded`. Only families that were recorded are reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

EXTERNAL_DNS = "external-dns.alpha.kubernetes.io/"
SAME, CHANGED, PENDING = "same", "changed", "pending"


@dataclass(frozen=True)
class External:
    kind: str
    namespace: str
    name: str
    type: str  # loadBalancerHostname, loadBalancerIP, externalName, ingressHost, externalDNS:...
    value: str


def _ingress_points(status: Obj) -> list[tuple[str, str]]:
    points: list[tuple[str, str]] = []
    for entry in (status.get("loadBalancer") or {}).get("ingress") or []:
        if entry.get("hostname"):
            points.append(("loadBalancerHostname", str(entry["hostname"])))
        if entry.get("ip"):
            points.append(("loadBalancerIP", str(entry["ip"])))
    return points


def values_of(obj: Obj) -> list[tuple[str, str]]:
    """(type, value) of every external name of one object, in a stable order."""
    kind, meta = str(obj.get("kind")), obj.get("metadata") or {}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    entries: list[tuple[str, str]] = []
    if kind == "Service":
        if spec.get("type") == "ExternalName" and spec.get("externalName"):
            entries.append(("externalName", str(spec["externalName"])))
        entries += _ingress_points(status)
    elif kind == "Ingress":
        hosts = [r.get("host") for r in spec.get("rules") or []]
        hosts += [h for t in spec.get("tls") or [] for h in t.get("hosts") or []]
        entries += [("ingressHost", str(h)) for h in dict.fromkeys(hosts) if h]
        entries += _ingress_points(status)
    for annotation, value in sorted((meta.get("annotations") or {}).items()):
        if annotation.startswith(EXTERNAL_DNS) and annotation.endswith(("hostname", "target")):
            what = annotation[len(EXTERNAL_DNS) :]
            entries += [
                (f"externalDNS:{what}", v.strip()) for v in str(value).split(",") if v.strip()
            ]
    return entries


def external_names(objects: list[Obj]) -> list[External]:
    """Names outside the cluster that the captured objects made or point at."""
    found: list[External] = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        ns, name = str(meta.get("namespace") or ""), str(meta.get("name"))
        found += [External(str(obj.get("kind")), ns, name, t, v) for t, v in values_of(obj)]
    return found


def family(what: str) -> str:
    """Types compared with each other: a load balancer's hostname may come back as an IP."""
    return "loadBalancer" if what.startswith("loadBalancer") else what


def pair(
    recorded: list[tuple[str, str]], current: list[tuple[str, str]]
) -> list[tuple[str, str, str, str]]:
    """(type, recorded, current, state) for the (type, value) names of one family of one
    object, recorded and current; see the module. The type is the recorded one, or the current
    one for a value that pairs with nothing recorded."""
    old = [v for _, v in recorded]
    now = [v for _, v in current]
    fresh = [(t, v) for t, v in current if v not in old]
    pairs: list[tuple[str, str, str, str]] = []
    for what, value in recorded:
        if value in now:
            pairs.append((what, value, value, SAME))
        elif fresh:
            pairs.append((what, value, fresh.pop(0)[1], CHANGED))
        elif now:
            pairs.append((what, value, "", CHANGED))
        else:
            pairs.append((what, value, "", PENDING))
    pairs += [(what, "", value, CHANGED) for what, value in fresh]
    return pairs
