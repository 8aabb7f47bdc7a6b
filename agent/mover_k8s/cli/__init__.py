"""`mover app ...` for people and `mover agent ...` for the two components.

`mover app` talks to the cluster of the current kubeconfig context: it creates the Backup or
Restore and, with --wait, follows it until it ends (exit 1 when it failed, with the reason
from its Ready condition). Input is checked before anything is created: a bad mapping, an
unknown mode, or a name already taken changes nothing.

Registered with `mover` through the `mover.commands` entry point (pyproject.toml), as
`mover_k8s.cli:app` and `mover_k8s.cli:agent`; re-exports only. The modules, one job each:
app_cmds (the `app` group) with backup_cmds, restore_cmd, status_cmds, diff_cmd and migrate_cmd;
agent_cmds (the `agent` group) with serve (a component until a signal) and crds; and what the
commands share: options (kubeconfig, context, namespace; parsing), submit (create and follow),
progress, render (what people read) and captured (a Backup's objects, read back).
"""

from mover_k8s.cli.agent_cmds import agent
from mover_k8s.cli.app_cmds import app
from mover_k8s.cli.crds import crds_dir, load_crds

__all__ = ["agent", "app", "crds_dir", "load_crds"]
