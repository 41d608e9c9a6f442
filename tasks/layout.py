"""What regkit puts on a registry host, by name: paths, containers, networks, labels.

Every task that reads or changes a registry host takes its names from here, so
that "where does the password file live on the host" has one answer.

On the host (all root-owned):

- ``/etc/regkit/nginx/``     the proxy's build context (configuration only)
- ``/etc/regkit/registry/<digest>/``  the registry's ``config.yml`` (0600, holds the http
  secret), one folder per content: the normal and read-only variants of what runs
  now and of what ran before, so that ``fab rollback`` returns to an image with the
  configuration it ran with
- ``/etc/regkit/tls/``       ``server.crt`` and ``server.key`` (0600), mounted read-only
- ``/etc/regkit/auth/``      ``htpasswd`` (0640, group PASSWORD_GID), mounted read-only into
  the token service, which checks passwords
- ``/etc/regkit/maintenance/``  ``gc`` exists while ``fab gc`` collects, ``migrate`` while
  ``fab migrate-storage`` copies (nginx then answers writes with a message saying so),
  mounted read-only into nginx
- ``/etc/regkit/token-image/``  the token service's build context (its source, no secrets)
- ``/etc/regkit/token/``     the token signing key (0600, owned by the service's user) and
  certificate, mounted read-only into the token service
- ``/etc/regkit/rights/``    ``rights.json``: each user's role and patterns (0640, group of
  the token service), mounted read-only into it; read again when it changes
- ``/etc/regkit/mirror/<digest>/config.yml`` (0600) the mirror's config
  (``registry.mirror``), one folder per content as for the registry, with the
  upstream's CA beside it if it has a private one; its cache in the inventory's
  ``registry.mirror.data_dir``
- ``/etc/regkit/ca.crt``, ``/etc/regkit/probe-password`` (0600)
- ``/etc/regkit/deployed.json``  what runs now and what ran before (for rollback)
- ``/etc/regkit/pruned.json``  when ``fab prune`` last deleted on this host, and what it freed
- ``/etc/docker/certs.d/<domain>[:port]/ca.crt`` so the host's Docker trusts the registry
- the registry's data in the inventory's ``data_dir``
"""

from __future__ import annotations

REMOTE_DIR = "/etc/regkit"
NGINX_CONTEXT_DIR = f"{REMOTE_DIR}/nginx"
REGISTRY_CONFIGS = f"{REMOTE_DIR}/registry"
# Where regkit before staged configs kept the config, and its read-only variant: the
# first deploy stages them by digest (rollback can return to them), then removes them.
LEGACY_CONFIGS = (f"{REGISTRY_CONFIGS}/config.yml", f"{REMOTE_DIR}/registry-readonly")
LEGACY_CONFIG_FILES = (LEGACY_CONFIGS[0], f"{LEGACY_CONFIGS[1]}/config.yml")
TLS_DIR = f"{REMOTE_DIR}/tls"
AUTH_DIR = f"{REMOTE_DIR}/auth"
AUTH_FILE = f"{AUTH_DIR}/htpasswd"
MAINTENANCE_DIR = f"{REMOTE_DIR}/maintenance"
# The flags a task raises there while the registry is read-only: name -> while what.
MAINTENANCE = {
    "gc": "garbage is collected (fab gc)",
    "migrate": "its data is copied to S3 (fab migrate-storage)",
}
MAINTENANCE_FLAGS = tuple(f"{MAINTENANCE_DIR}/{name}" for name in MAINTENANCE)
TOKEND_CONTEXT_DIR = f"{REMOTE_DIR}/token-image"
TOKEND_DIR = f"{REMOTE_DIR}/token"
RIGHTS_DIR = f"{REMOTE_DIR}/rights"
RIGHTS_FILE = f"{RIGHTS_DIR}/rights.json"
CA_FILE = f"{REMOTE_DIR}/ca.crt"
PROBE_PASSWORD_FILE = f"{REMOTE_DIR}/probe-password"
# The S3 service's private CA (registry.storage.s3.ca_file), and where the registry
# container reads it (SSL_CERT_FILE: Go adds it to the system's CAs, which stay).
S3_CA_FILE = f"{REMOTE_DIR}/s3-ca.crt"
S3_CA_MOUNT = "/etc/regkit-s3-ca.crt"
MIRROR_CONFIG_DIR = f"{REMOTE_DIR}/mirror"
# The upstream's private CA (registry.mirror.ca_file), beside the mirror's config.
MIRROR_CA_NAME = "upstream-ca.crt"
# nginx asks the mirror's clients for a certificate from this CA (trust-ca --mirror);
# the deploy proves the mirror with a client key and certificate of its own.
MIRROR_CLIENTS_CA = "mirror-clients-ca.crt"
MIRROR_PROBE_CERT = f"{REMOTE_DIR}/mirror-probe.crt"
MIRROR_PROBE_KEY = f"{REMOTE_DIR}/mirror-probe.key"
DEPLOYED = f"{REMOTE_DIR}/deployed.json"
PRUNED = f"{REMOTE_DIR}/pruned.json"

# Where the registry image reads its configuration (registry:2).
REGISTRY_CONFIG_MOUNT = "/etc/docker/registry"
# The config the registry runs, named on its command line (the images' entrypoint
# serves a *.yml argument): registry:2 and registry:3 alike.
REGISTRY_CONFIG = f"{REGISTRY_CONFIG_MOUNT}/config.yml"
REGISTRY_DATA_MOUNT = "/var/lib/registry"

REGISTRY = "regkit-registry"
NGINX = "regkit-nginx"
NGINX_IMAGE = "regkit-nginx"
TOKEND = "regkit-token"
TOKEND_IMAGE = "regkit-token"
MIRROR = "regkit-mirror"
# The names nginx reaches the registry and the token service by, on BACKEND.
REGISTRY_ALIAS = "registry"
TOKEND_ALIAS = "token"
MIRROR_ALIAS = "mirror"
# Where the mirror's counters (Go's expvar) answer, inside its own network namespace only.
MIRROR_DEBUG = "127.0.0.1:5001"
# The token service's user and group (it runs as neither root nor nginx's worker).
TOKEND_UID = 4431
# The password file's group, which the token service joins. It is the gid of nginx's
# workers, who checked passwords before the token service did: an nginx of that
# time (during an upgrade's image builds, or after a rollback) still reads the file.
PASSWORD_GID = 4430
# Where the token service reads its key, the rights and the passwords, inside its container.
SIGNING_MOUNT = "/etc/regkit-token"
RIGHTS_MOUNT = "/etc/regkit-rights"
AUTH_MOUNT = "/etc/regkit-auth"

# nginx publishes its port through NETWORK; the registry is only on BACKEND, an
# internal network without an address on the host: no route reaches it, from a
# neighbour or from the host itself, whatever the firewall says. Only nginx,
# attached to both, talks to it.
NETWORK = "regkit"
BACKEND = "regkit-backend"
INHIBIT_IPV4 = "com.docker.network.bridge.inhibit_ipv4"
BACKEND_OPTIONS = ("--internal", "-o", f"{INHIBIT_IPV4}=true")

# Labels on the containers: a hash of how each was started (to detect drift), and
# of the registry's configuration.
SPEC_LABEL = "regkit.spec"
CONFIG_LABEL = "regkit.config"

# The deploy's own test image.
PROBE_REPO = "regkit/probe"
PROBE_TAG = "deploy"


def probe_tag(alias: str) -> str:
    """The probe's tag for one host: replicas on one bucket each prove their own."""
    return f"{PROBE_TAG}-{alias}"


# The registry host names itself: one line in /etc/hosts maps the registry's name to
# 127.0.0.1, so deploy's proof (and the host's own pulls) reach this host's proxy, not
# DNS's choice among the replicas, and need no DNS on the host.
HOSTS_FILE = "/etc/hosts"
SELF_NAME_MARK = "# regkit: this host serves the registry itself"

# One task at a time changes a host: an flock held by a process that lives as
# long as the task's SSH connection.
LOCK = "/run/lock/regkit.lock"
LOCK_OWNER = "/run/lock/regkit.owner"


def config_dir(digest: str) -> str:
    """The folder of the registry config whose content has this SHA-256."""
    return f"{REGISTRY_CONFIGS}/{digest[:16]}"


def mirror_config_dir(digest: str) -> str:
    """The folder of the mirror config whose content has this SHA-256: a mirror that
    fails to start with a new one gets its old container back, on its old folder."""
    return f"{MIRROR_CONFIG_DIR}/{digest[:16]}"


# Below this much free space under the data directory, deploy refuses to start.
MIN_FREE_KB = 1024 * 1024
