"""The Kubernetes API layer: the only importer of the `kubernetes` client."""
