"""mover_k8s: the Kubernetes side of mover (CRDs, the controller, the node agent, `mover app`).

Packaged under its own import name so that installing mover never claims a generic top-level
name. Layers: `k8s` is the only importer of the `kubernetes` client; `node` holds the exposers
and jobs; `controller` the reconcilers; mover (the data path) never imports this package.
"""
