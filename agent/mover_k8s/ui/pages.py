"""Each page's data for one user (a Session): what it may see, fetched, and what it does.
Blocking calls (the API server, the repository); mover_k8s.ui.web runs them in threads and
renders the result (the JSON endpoints return it as it is).

Not found and not allowed to see are the same answer (404): a user learns nothing of an app,
a Backup or a Restore they may not see, not even that it exists.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException

from mover.errors import UsageError
from mover_k8s import api
from mover_k8s.apps import APP_LABEL, object_name
from mover_k8s.k8s.client import Obj
from mover_k8s.ui import views, wizard
from mover_k8s.ui.access import BACK_UP, RESTORE_INTO, SEE, Session

Data = dict[str, Any]


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")


class Pages:
    """The pages of one dashboard: mover's namespace, whether it runs locally, and where drift
    may read git checkouts (`desired_root`; None: locally any directory, in the cluster none)."""

    def __init__(self, namespace: str, local: bool, desired_root: Path | None = None) -> None:
        self.namespace = namespace
        self.local = local
        self.desired_root = desired_root

    # -- applications ----------------------------------------------------------------------

    def application(self, session: Session, name: str) -> Data:
        if not session.may(SEE, name):
            raise HTTPException(404, f"no application {name} that you may see")
        namespace = session.reader.find(api.NAMESPACE, None, name)
        found = views.listing(session, self.namespace)
        app: Data = views.application(namespace, found) if namespace else {"name": name}
        return {
            "app": app,
            "points": views.restore_points(session, self.namespace, name),
            "mayBackUp": session.may(BACK_UP, name),
            "repositories": [
                r["metadata"]["name"] for r in session.reader.list(api.REPOSITORY, self.namespace)
            ],
        }

    def back_up_now(self, session: Session, namespace: str, repository: str) -> str:
        """A Backup of one app now, made with the user's own rights; its name."""
        session.require(BACK_UP, namespace)
        body = {
            "apiVersion": api.API_VERSION,
            "kind": "Backup",
            "metadata": {
                "name": object_name("ui", namespace, _stamp()),
                "namespace": self.namespace,
                "labels": {APP_LABEL: namespace},
                "annotations": {wizard.REQUESTED_BY: session.user.name},
            },
            "spec": {"repository": repository, "includedNamespaces": [namespace]},
        }
        return str(session.actor.create(api.BACKUP, body)["metadata"]["name"])

    # -- restore points ----------------------------------------------------------------------

    def backup(self, session: Session, name: str) -> Obj:
        backup = views.find_backup(session, self.namespace, name)
        if backup is None:
            raise HTTPException(404, f"no Backup {name} that you may see")
        return backup

    def restore_point(
        self, session: Session, name: str, verify: bool = False, read_data: bool = False
    ) -> Data:
        """A Backup: its state and progress, what it captured, and (verify) whether its root
        hash still attests what the repository holds."""
        backup = self.backup(session, name)
        return {
            "point": views.restore_point(backup),
            "live": views.progress_of(session.reader, backup),
            "capture": views.capture_of(session, backup),
            "verified": views.verify(session, backup, read_data) if verify else None,
        }

    def progress(self, session: Session, kind: str, name: str) -> Data:
        found: Obj | None
        if kind == "backups":
            found = views.find_backup(session, self.namespace, name)
        elif kind == "restores":
            found = self.find_restore(session, name)
        else:
            raise HTTPException(404, "backups or restores")
        if found is None:
            raise HTTPException(404, f"no {kind[:-1]} {name} that you may see")
        return views.progress_of(session.reader, found)

    # -- drift -------------------------------------------------------------------------------

    def desired_directory(self, text: str) -> Path:
        """The directory drift reads: under desired_root when there is one; else, locally, an
        absolute path; in the cluster without a root, none."""
        root = self.desired_root
        if root is None and not self.local:
            raise UsageError(
                "drift against git needs a checkout in the dashboard's pod, named by "
                "mover ui --desired-root"
            )
        if root is not None:
            path = (root / text.lstrip("/")).resolve()
            if not path.is_relative_to(root):
                raise UsageError(f"{text}: not under the checkout {root}")
            return path
        path = Path(text)
        if not path.is_absolute():
            raise UsageError(f"{text}: give the directory's absolute path")
        return path

    def drift(self, session: Session, name: str, text: str) -> Data:
        backup = self.backup(session, name)
        if not text:
            return {"report": None, "error": ""}
        try:
            report = views.drift(session, backup, self.desired_directory(text))
        except UsageError as exc:
            return {"report": None, "error": str(exc)}
        return {"report": report, "error": ""}

    # -- restores ----------------------------------------------------------------------------

    def find_restore(self, session: Session, name: str) -> Obj | None:
        """The Restore, when the user may see its source and target namespaces."""
        restore = session.reader.find(api.RESTORE, self.namespace, name)
        if restore is None:
            return None
        backups = {
            b["metadata"]["name"]: b for b in session.reader.list(api.BACKUP, self.namespace)
        }
        names = views.restore_namespaces(restore, backups)
        if not names or not all(session.may(SEE, n) for n in names):
            return None
        return restore

    def restore(self, session: Session, name: str) -> Data:
        restore = self.find_restore(session, name)
        if restore is None:
            raise HTTPException(404, f"no Restore {name} that you may see")
        return {
            "restore": restore,
            "spec": restore.get("spec") or {},
            "report": (restore.get("status") or {}).get("report") or {},
            "live": views.progress_of(session.reader, restore),
        }

    def restore_form(self, session: Session, form: wizard.Form) -> Data:
        """The wizard's form for a Backup, its namespaces and storage classes filled in."""
        backup = self.backup(session, form.backup)
        capture = views.capture_of(session, backup)
        for ns in capture.get("namespaces") or []:
            form.namespaces.setdefault(ns, ns)
        for cls in capture.get("storageClasses") or []:
            form.classes.setdefault(cls, cls)
        if not form.name:
            form.name = f"{form.backup}-restore-{_stamp()}"[-63:].lstrip("-.")
        return {"form": form, "point": views.restore_point(backup), "capture": capture}

    def preview(self, session: Session, form: wizard.Form) -> Data:
        context = self.restore_form(session, form)
        try:
            spec = form.spec()
        except UsageError as exc:
            return {**context, "preview": {"error": str(exc)}}
        backup = self.backup(session, form.backup)
        return {**context, "preview": wizard.preview(session, backup, spec)}

    def submit_restore(self, session: Session, form: wizard.Form) -> str:
        """Make the Restore (the user's rights; they must be allowed to restore into every
        target namespace); its name."""
        context = self.restore_form(session, form)
        spec = form.spec()
        captured = context["capture"].get("namespaces") or []
        for target in wizard.target_namespaces(spec, captured):
            session.require(RESTORE_INTO, target)
        created = wizard.create_restore(session, self.namespace, form.name, spec)
        return str(created["metadata"]["name"])

    # -- repositories and agents ---------------------------------------------------------------

    def repositories(self, session: Session) -> Data:
        return {
            "repositories": views.repositories(session, self.namespace),
            "agents": views.agents(session, self.namespace),
        }
