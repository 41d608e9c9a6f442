"""Fabric entry point: what an operator runs against real servers (``fab --list``).

The remote tasks stand at the top level; the local collections follow. The local
``users`` collection (``invoke users.add``) is replaced here by ``adduser``,
``deluser`` and ``users``, which also change the registry hosts. The lab is not
here: it is reached with ``invoke lab.*``.
"""

from invoke import Collection

from tasks import (
    accounts,
    catalog,
    deploy,
    health,
    inventory,
    maintenance,
    pki,
    render,
    trust,
)

ns = Collection(
    deploy.deploy,
    health.status,
    health.check_expiry,
    deploy.undeploy,
    trust.trust_ca,
    trust.untrust_ca,
    accounts.adduser,
    accounts.deluser,
    accounts.list_users,
    catalog.show_catalog,
    maintenance.gc,
    maintenance.rollback,
    inventory,
    pki,
    render,
)
