"""Fabric entry point: every task, local and remote (``fab --list``)."""

from tasks import ns

__all__ = ["ns"]
