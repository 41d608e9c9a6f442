"""Fabric entry point: what an operator runs against real servers (``fab --list``).

The tasks that act on hosts stand at the top level, taken from each module's own
collection; the local collections follow. The local ``users`` collection
(``invoke users.add``) is replaced here by ``adduser``, ``deluser`` and ``users``,
which also change the registry hosts. The lab is not here: it is reached with
``invoke lab.*``. ``fabric.yaml`` next to this file sets the executor that runs a
task once for all ``-H`` hosts (see :mod:`tasks.remote.fanout`).
"""

from invoke import Collection

from tasks import (
    accounts,
    backup,
    catalog,
    deploy,
    health,
    inventory,
    maintenance,
    migrate,
    mirror,
    pki,
    prune,
    render,
    restore,
    state_backup,
    storage,
    trust,
)

ns = Collection(inventory, pki, render, state_backup, storage, mirror)
REMOTE = (deploy, health, trust, accounts, catalog, maintenance, prune, backup, restore, migrate)
for module in REMOTE:
    for name, remote_task in module.ns.tasks.items():
        ns.add_task(remote_task, name=name)
