"""Fabric entry point: every task, local and remote (``fab --list``).

The local collections come from ``tasks`` (also what ``invoke --list`` shows);
the tasks that work over SSH join them here at the top level.
"""

from tasks import deploy, ns, trust

for remote_task in (
    deploy.deploy,
    deploy.status,
    deploy.undeploy,
    trust.trust_ca,
    trust.untrust_ca,
):
    ns.add_task(remote_task)

__all__ = ["ns"]
