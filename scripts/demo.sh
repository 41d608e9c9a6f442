#!/usr/bin/env bash
# The demo: bring the lab up, make a CA and a demo user, deploy the registry to the
# lab's regbox and prove it. Everything runs against real sshd + Docker hosts.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

say() { printf '\n==> %s\n' "$*"; }

say "lab: real hosts in containers (regbox, client1, client2, b2d)"
invoke lab.up

export REGISTRY_INVENTORY=lab/inventory.yaml
state=lab/state/regkit
mkdir -p -m 700 "$state"  # private: regkit refuses a state folder others may open

# Demo secrets, said on screen: a real deployment asks for them instead.
export REGISTRY_CA_PASSPHRASE=lab-demo-passphrase
demo_password_file=lab/state/demo-password
[ -f "$demo_password_file" ] || (umask 077 && head -c 18 /dev/urandom | base64 > "$demo_password_file")

if [ -f "$state/pki/ca.crt" ]; then
    say "PKI: CA exists (kept)"
else
    say "PKI: new CA, key encrypted with the DEMO passphrase '$REGISTRY_CA_PASSPHRASE'"
    invoke pki.init
fi

if invoke users | grep -q '^demo	'; then
    say "users: demo exists (kept)"
else
    say "users: adding 'demo' (password in $demo_password_file, read from stdin)"
    invoke users.add --username demo --password-stdin < "$demo_password_file"
fi

say "deploy to regbox over SSH"
fab -H regbox deploy

say "trust the CA on every client (client1, client2, b2d) and log in as demo there"
fab trust-ca --login demo --password-stdin < "$demo_password_file"

image=registry.lab.test/demo/hello:1
say "push $image from client1"
invoke lab.run client1 "d=\$(mktemp -d) && echo 'hello from regkit' > \$d/hello.txt \
  && printf 'FROM scratch\\nCOPY hello.txt /\\n' > \$d/Dockerfile \
  && docker build -q -t $image \$d >/dev/null && docker push $image | tail -1 && rm -rf \$d"
for host in client2 b2d; do
    say "pull $image on $host"
    invoke lab.run "$host" "docker rmi -f $image >/dev/null 2>&1; docker pull -q $image >/dev/null \
      && docker inspect --format '{{index .RepoDigests 0}}' $image"
done

cat <<EOT

==> Try next (inventory: lab/inventory.yaml)
    export REGISTRY_INVENTORY=lab/inventory.yaml
    fab -H regbox deploy           # again: "no changes"
    fab trust-ca                   # again: "no changes", no daemon restarted
    fab -H regbox status
    invoke lab.run client2 'docker pull $image'
    invoke pki.show
    invoke lab.down                # remove the lab (images stay cached)
    The demo user's password is in $demo_password_file.
EOT
