"""Local tasks (``invoke --list``): inventory, PKI, users, rendering, the local state's
backup and the S3 keys, plus the lab.

Remote tasks that work over SSH are added on top of the product's collections in
``fabfile.py``; the lab (``lab/``, its own package) is not among them.
"""

import sys
from pathlib import Path

from invoke import Collection

from tasks import inventory, mirror, pki, render, state_backup, storage, users


def __getattr__(name: str) -> Collection:
    """``ns``, invoke's collection: the product's local collections and the lab's.

    Built here, on first use, rather than at import: the fabfile and the product's
    modules import this package, and must not load the lab. Invoke's loader asks
    for ``ns`` with ``getattr``, which is the only thing that brings the lab in. The
    loader puts only ``tasks/`` on ``sys.path``, so the repository root, which holds
    ``lab/``, goes there first.
    """
    if name != "ns":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from lab.commands import ns as lab

    return Collection(inventory, pki, users, render, state_backup, storage, mirror, lab)
