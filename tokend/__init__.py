"""regkit's token service: runs on each registry host, in its own container.

See :mod:`tokend.service`. It is shipped to the host as source (its image is built
there, like the proxy's) and imports nothing from :mod:`tasks`.
"""
