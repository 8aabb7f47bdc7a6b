"""Changed block tracking on Kubernetes (KEP-3314): a client of a CSI driver's SnapshotMetadata
service (client.py) and how it is found and authenticated through the API (discovery.py).
docs/kubernetes.md, "Changed block tracking"."""
