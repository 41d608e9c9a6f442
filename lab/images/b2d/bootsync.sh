#!/bin/sh
# Boot of the lab's boot2docker host (run under docker's --init), following
# boot2docker's files/bootsync.sh: the persistent disk, its certs, profile and
# ssh host keys, user data, then sshd and dockerd; then wait. On SIGTERM stop dockerd.
set -u

shutdown() {
	/etc/init.d/docker stop || true
	[ -f /run/sshd.pid ] && kill "$(cat /run/sshd.pid)" 2>/dev/null || true
	exit 0
}
trap shutdown TERM INT

mkdir -p /var/lib/boot2docker/etc /var/lib/boot2docker/log /run/sshd
chown docker:docker /var/lib/boot2docker

# install certs from "/var/lib/boot2docker/certs" into the system store
for f in /var/lib/boot2docker/certs/*.pem /var/lib/boot2docker/certs/*.crt; do
	[ -e "$f" ] || continue
	target="/usr/local/share/ca-certificates/boot2docker/$(basename "$f")"
	if [ "$target" = "${target%.crt}" ]; then
		target="$target.crt"
	fi
	mkdir -p "$(dirname "$target")"
	ln -sfT "$f" "$target"
done
if [ -d /usr/local/share/ca-certificates/boot2docker ]; then
	update-ca-certificates >/var/lib/boot2docker/log/ca-certificates.log 2>&1
fi

if [ -f /var/lib/boot2docker/profile ]; then
	. /var/lib/boot2docker/profile
fi

mkdir -p /var/lib/boot2docker/ssh
for type in rsa ecdsa ed25519; do
	key="/var/lib/boot2docker/ssh/ssh_host_${type}_key"
	[ -f "$key" ] || ssh-keygen -q -t "$type" -N '' -f "$key"
done

/usr/local/sbin/b2d-userdata
/usr/sbin/sshd

if [ -e /var/lib/boot2docker/bootsync.sh ]; then
	sh /var/lib/boot2docker/bootsync.sh
fi

/etc/init.d/docker start

if [ -e /var/lib/boot2docker/bootlocal.sh ]; then
	sh /var/lib/boot2docker/bootlocal.sh &
fi

touch /run/regkit-lab.booted

while :; do
	sleep 3600 &
	wait $!
done
