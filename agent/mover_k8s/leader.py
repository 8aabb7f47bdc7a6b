"""One active controller at a time: a Lease (coordination.k8s.io) that the leader renews every
pass, taken over by a standby once it has not been renewed for `seconds`.

Every change is a PUT carrying the resourceVersion read (or a create), so two controllers that
race for the Lease cannot both win: the API answers the loser 409 Conflict. A leader that stops
cleanly deletes the Lease, so a standby takes over at its next pass instead of after the expiry.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from mover_k8s import api, timestamps
from mover_k8s.errors import Conflict
from mover_k8s.k8s.client import Kube, Obj

log = logging.getLogger("mover.k8s.leader")
NAME = "mover-controller"


class Leadership:
    def __init__(self, kube: Kube, namespace: str, identity: str, seconds: float = 15.0) -> None:
        self.kube = kube
        self.namespace = namespace
        self.identity = identity
        self.seconds = seconds
        self.leading = False

    def _spec(self, lease: Obj | None) -> Obj:
        spec = dict((lease or {}).get("spec") or {})
        transitions = int(spec.get("leaseTransitions") or 0)
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = timestamps.micro_now()
            transitions += 1 if lease is not None else 0
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=max(1, round(self.seconds)),
            renewTime=timestamps.micro_now(),
            leaseTransitions=transitions,
        )
        return spec

    def acquire(self) -> bool:
        """Whether this controller leads for the next pass (renewing or taking the Lease)."""
        lease = self.kube.find(api.LEASE, self.namespace, NAME)
        try:
            if lease is None:
                self.kube.create(
                    api.LEASE,
                    {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": NAME, "namespace": self.namespace},
                        "spec": self._spec(None),
                    },
                )
            else:
                spec = lease.get("spec") or {}
                holder = spec.get("holderIdentity")
                renewed = timestamps.parse(str(spec.get("renewTime") or ""))
                duration = timedelta(seconds=float(spec.get("leaseDurationSeconds") or 0))
                expired = renewed is None or renewed + duration < datetime.now(UTC)
                if holder != self.identity and not expired:
                    return self._set(False)
                self.kube.replace(api.LEASE, dict(lease, spec=self._spec(lease)))
        except Conflict:  # another controller renewed or took it between our read and write
            return self._set(False)
        return self._set(True)

    def _set(self, leading: bool) -> bool:
        if leading != self.leading:
            log.info("%s %s", self.identity, "leads" if leading else "stands by")
        self.leading = leading
        return leading

    def release(self) -> None:
        if not self.leading:
            return
        lease = self.kube.find(api.LEASE, self.namespace, NAME)
        if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
            self.kube.delete(api.LEASE, self.namespace, NAME)
        self.leading = False
