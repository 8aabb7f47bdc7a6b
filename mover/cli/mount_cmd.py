"""`mover mount`: browse snapshots as read-only image files (mover.mount, docs/mount.md)."""

from __future__ import annotations

import json
import sys

import click

from mover import api
from mover.api import DEFAULT_MOUNT_CACHE_SIZE, MountOptions, MountView, plural
from mover.cli.context import json_option, open_repo, repo_option
from mover.cli.sizes import parse_size


@click.command()
@repo_option
@click.argument("mountpoint", metavar="MOUNTPOINT")
@click.option(
    "--cache-size",
    metavar="SIZE",
    default=f"{DEFAULT_MOUNT_CACHE_SIZE >> 20}MiB",
    show_default=True,
    help="Memory for decoded chunks (shared by all snapshots; least recently used go first); "
    "at least two of the repository's largest chunks.",
)
@click.option(
    "--allow-other",
    is_flag=True,
    help="Let other users read the mount too (needs root, or user_allow_other in /etc/fuse.conf).",
)
@json_option
def mount(
    repo: str | None, mountpoint: str, cache_size: str, allow_other: bool, as_json: bool
) -> None:
    """Mount every snapshot read-only at MOUNTPOINT (an empty directory), over FUSE:
    MOUNTPOINT/<short id>.img, MOUNTPOINT/latest.img and MOUNTPOINT/by-source/SOURCE/. Reads
    fetch only the chunks they touch. Runs in the foreground until unmounted
    (`fusermount3 -u MOUNTPOINT`) or interrupted (Ctrl-C); holds the repository's shared lock
    meanwhile. --json prints one JSON line once mounted."""
    size = parse_size(cache_size, "--cache-size", minimum=1)
    api.check_mountpoint(mountpoint)
    api.load_fuse()  # what to install is said before the password is asked for
    repository = open_repo(repo)

    def mounted(view: MountView) -> None:
        ids = {s.id for s in view.files.values()}
        if as_json:
            files = {path: s.id for path, s in sorted(view.files.items())}
            line = {"mountpoint": mountpoint, "snapshots": len(ids), "files": files}
            sys.stdout.write(json.dumps(line) + "\n")
        else:
            latest = view.files["/latest.img"]
            sys.stdout.write(
                f"mounted {plural(len(ids), 'snapshot')} at {mountpoint}, read-only (latest.img: "
                f"{latest.id[:8]}); stop with Ctrl-C or `fusermount3 -u {mountpoint}`\n"
            )
        sys.stdout.flush()

    options = MountOptions(cache_size=size, allow_other=allow_other, on_mounted=mounted)
    api.mount(repository, mountpoint, options=options)
    click.echo(f"unmounted {mountpoint}", err=True)
