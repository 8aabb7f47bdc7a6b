"""Reconciling a Restore: validate everything, then apply objects in order, then hand each
volume to the agent of its node (a VolumeRestore), wait, and report.

Modes: `full` (objects, then data into the claims just made), `resources-only` (objects),
`data-only` (no object is created or changed: the data goes into the claims that exist, e.g.
recreated by a GitOps pipeline; a volume without a matching claim is reported).

All input is checked before the first write: the mode, the backup (found as a Backup here, or
by name in the repository: a backup taken on another cluster), the repository, the manifest
against the Backup's root hash, the mappings (storage classes must exist here), the volume
subset, and the agents for the target volumes. A Restore that fails a check changes nothing.

What a restore changes in the objects beyond the mappings (restore_plan: Service addresses,
namespace references in the data) is in the report: `dropped` and `namespaceReferences`, each
the first REPORT_LIMIT entries, with `droppedCount` and `namespaceReferenceCount`.

Transforms (spec.transforms, mover_k8s.transforms) are checked with the rest of the spec and
applied to the plan, so a rule that does not apply to an object fails the Restore
(`TransformFailed`) before anything is written; the report's `transformed` (and
`transformedCount`) says which rules changed which objects.

External names (mover_k8s.external): once the objects are made, the report pairs each external
name recorded in the captured objects (a load balancer's hostname, an ExternalName target, an
Ingress host, an external-dns name) with the restored object's current one: `same`, `changed`
or `pending` (no value yet, e.g. a LoadBalancer the cloud has not provisioned). Pending entries
are refreshed on every pass, also after the Restore has ended, for `spec.externalWait` (10m)
after its completion; then they are left pending and `report.externalPhase` says `TimedOut`.

The steps, one module each, in the order a Restore takes them: validate (the spec, the backup,
the target cluster), plan (the manifest read and the plan made), apply (the objects), volumes
(the VolumeRestores handed out and followed), external (the external names); reconciler
sequences them from the Restore's status.
"""

from mover_k8s.controller.restore.reconciler import RestoreReconciler

__all__ = ["RestoreReconciler"]
