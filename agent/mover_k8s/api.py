"""The kinds mover defines (group mover.dev) and the built-in kinds it works with.

Our own kinds are fixed here rather than discovered: the controller and the agents are built
against this version of the CRDs (crds/*.yaml).
"""

from __future__ import annotations

from mover_k8s.k8s.types import ResourceType

GROUP = "mover.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
STATUS = frozenset({"status"})

# Labels on work items: the node agent lists its own by node, the controller by owner.
NODE_LABEL = f"{GROUP}/node"
BACKUP_LABEL = f"{GROUP}/backup"
RESTORE_LABEL = f"{GROUP}/restore"
SCHEDULE_LABEL = f"{GROUP}/schedule"


def _ours(plural: str, kind: str) -> ResourceType:
    return ResourceType(GROUP, VERSION, plural, kind, True, frozenset(), STATUS)


REPOSITORY = _ours("repositories", "Repository")
BACKUP = _ours("backups", "Backup")
RESTORE = _ours("restores", "Restore")
VOLUME_BACKUP = _ours("volumebackups", "VolumeBackup")
VOLUME_RESTORE = _ours("volumerestores", "VolumeRestore")
SCHEDULE = _ours("schedules", "Schedule")
OURS = (REPOSITORY, BACKUP, RESTORE, VOLUME_BACKUP, VOLUME_RESTORE, SCHEDULE)

NAMESPACE = ResourceType("", "v1", "namespaces", "Namespace", False, frozenset(), STATUS)
SECRET = ResourceType("", "v1", "secrets", "Secret", True)
PVC = ResourceType(
    "", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, frozenset(), STATUS
)
PV = ResourceType("", "v1", "persistentvolumes", "PersistentVolume", False, frozenset(), STATUS)
CONFIG_MAP = ResourceType("", "v1", "configmaps", "ConfigMap", True)
SERVICE = ResourceType("", "v1", "services", "Service", True, frozenset(), STATUS)
DEPLOYMENT = ResourceType("apps", "v1", "deployments", "Deployment", True, frozenset(), STATUS)
REPLICA_SET = ResourceType("apps", "v1", "replicasets", "ReplicaSet", True, frozenset(), STATUS)
POD = ResourceType("", "v1", "pods", "Pod", True, frozenset(), STATUS)
STORAGE_CLASS = ResourceType("storage.k8s.io", "v1", "storageclasses", "StorageClass", False)
CRD = ResourceType(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
)
LEASE = ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True)
VOLUME_SNAPSHOT = ResourceType(
    "snapshot.storage.k8s.io", "v1", "volumesnapshots", "VolumeSnapshot", True, frozenset(), STATUS
)
VOLUME_SNAPSHOT_CONTENT = ResourceType(
    "snapshot.storage.k8s.io",
    "v1",
    "volumesnapshotcontents",
    "VolumeSnapshotContent",
    False,
    frozenset(),
    STATUS,
)
VOLUME_SNAPSHOT_CLASS = ResourceType(
    "snapshot.storage.k8s.io", "v1", "volumesnapshotclasses", "VolumeSnapshotClass", False
)
CLUSTER_ROLE = ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False)
CLUSTER_ROLE_BINDING = ResourceType(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False
)

# Phases of Backups, Restores and work items.
NEW = "New"
IN_PROGRESS = "InProgress"
WAITING = "WaitingForVolumes"
RUNNING = "Running"
COMPLETED = "Completed"
PARTIALLY_FAILED = "PartiallyFailed"
FAILED = "Failed"
CANCELLED = "Cancelled"
DONE_PHASES = frozenset({COMPLETED, PARTIALLY_FAILED, FAILED, CANCELLED})

MODES = ("full", "data-only", "resources-only")
