"""Expected failures, each with a message a user can act on.

Anything raised as a :class:`RegkitError` ends the task with its message on one
line and a non-zero exit code, never a traceback (see :mod:`tasks.cli`).
"""


class RegkitError(Exception):
    """A failure the user can fix: the message says what, where and what to do."""

    exit_code = 1


class InventoryError(RegkitError):
    """The inventory file is missing, malformed or inconsistent."""

    exit_code = 2


class StateError(RegkitError):
    """Local state (PKI, password file, secrets) is missing or damaged."""


class PkiError(StateError):
    """The CA or server certificate cannot be made, read or used."""


class UsersError(RegkitError):
    """A username, password or password-file operation was refused."""


class RemoteError(RegkitError):
    """A host could not be reached or a step on it failed."""
