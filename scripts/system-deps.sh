#!/usr/bin/env bash
# Install the Debian packages the tasks, the tests and the lab need, if any is missing.
#   nginx-light, apache2-utils, openssl: the local nginx proxy test and htpasswd checks
#   docker.io, debootstrap, openssh-client, iproute2, curl: the lab (real hosts in containers)
#   chromium, fonts-dejavu-core: the catalog page test (headless, driven by Playwright)
#   shellcheck: the suite lints every shell script regkit renders
#   gnutls-bin: certtool checks that GnuTLS honours the CA's Name Constraints
set -euo pipefail

packages=(
    apache2-utils ca-certificates chromium curl debootstrap docker.io fonts-dejavu-core iproute2 make
    gnutls-bin nginx-light shellcheck
    openssh-client openssl python3-venv
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "system packages: unchanged (all ${#packages[@]} installed)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "system packages missing: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi

echo "system packages: installing ${missing[*]}"
# Keep package scripts from starting services (nginx on :80, dockerd): the lab and
# the tests start what they need themselves.
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "system packages: changed (installed ${missing[*]})"
