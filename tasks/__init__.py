"""Local tasks (``invoke --list``): inventory, PKI, users, rendering and the lab.

Remote tasks that work over SSH are added on top of these in ``fabfile.py``.
"""

from invoke import Collection

from tasks import inventory, lab, pki, render, users

ns = Collection(inventory, pki, users, render, lab)
