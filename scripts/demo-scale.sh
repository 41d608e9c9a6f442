#!/usr/bin/env bash
# The scale-out demo, after the demo: the lab's S3 service (store, Ceph's gateway) and
# a second registry host (regbox2) start; regbox's images move from its disk into the
# bucket (fab migrate-storage), which deploys both hosts on it, one after the other;
# then a client pulls through each of them, and fab status shows both.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

say() { printf '\n==> %s\n' "$*"; }

scripts/demo.sh

say "lab: store (Ceph's S3 gateway) and regbox2, a second registry host"
invoke lab.up --scale-out

say "inventory: the same lab, the registry on store's bucket (lab/inventory-s3.yaml)"
invoke lab.s3-inventory --root /demo
export REGISTRY_INVENTORY=lab/inventory-s3.yaml
export REGISTRY_CA_PASSPHRASE=lab-demo-passphrase

say "move regbox's images into the bucket, then deploy regbox and regbox2 on it"
fab -H regbox migrate-storage --to s3

image=registry.lab.test/demo/hello:1
for replica in regbox regbox2; do
    say "pull $image on client2 through $replica (its address pinned in /etc/hosts)"
    ip=$(invoke lab.run -h "$replica" -c "hostname -i" | sed -n "s/^\[$replica\] \([0-9.]*\).*/\1/p")
    invoke lab.run -h client2 -c "cp /etc/hosts /etc/hosts.demo && echo '$ip registry.lab.test' >> /etc/hosts \
      && docker rmi -f $image >/dev/null 2>&1; docker pull -q $image >/dev/null \
      && docker inspect --format '{{index .RepoDigests 0}}' $image; rc=\$?; \
      cat /etc/hosts.demo > /etc/hosts; exit \$rc"
done

say "status of both replicas and the bucket"
fab status

cat <<EOT

==> Try next (inventory: lab/inventory-s3.yaml)
    export REGISTRY_INVENTORY=lab/inventory-s3.yaml
    fab deploy                          # rolls over regbox, regbox2: "no changes"
    fab deploy --parallel               # both at once (refused if a container would be recreated)
    fab gc                              # one collection, both replicas read-only meanwhile
    fab -H regbox migrate-storage --to s3 --delete-source   # the disk's copy goes
    invoke lab.down                     # remove the lab (images stay cached)
EOT
