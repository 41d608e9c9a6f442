"""The lab: real Docker hosts on this machine, for the demo and the tests.

``lab.up`` starts a Docker engine for the lab if none answers on the lab's socket,
builds the lab's images from Debian packages (debootstrap, then the Dockerfiles in
``lab/images``), starts four hosts in containers (``regbox``, ``client1``,
``client2`` and the boot2docker-like ``b2d``; with ``--all`` also ``node1``, with
containerd alone, and ``pod1``, with podman) and writes ``lab/inventory.yaml``.
Images are tagged with a hash of everything they are made from, so a second run
builds nothing. See lab/README.md.
"""
