"""Talking to hosts over SSH, by concern.

- :mod:`~tasks.remote.connect`: a Connection to an inventory alias, host key pinned;
- :mod:`~tasks.remote.target`: a connected host, its root commands, stdin and errors;
- :mod:`~tasks.remote.upload`: files to place and the stream that places them;
- :mod:`~tasks.remote.lock`: the host lock, one changing task at a time;
- :mod:`~tasks.remote.fanout`: which hosts a task acts on, and running it on each.
"""
