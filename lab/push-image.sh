# Push one image with the registry's API: one gzip layer of fresh random bytes and a
# config whose creation time is $CREATED (or the config $CONFIG, as it is), under each
# of $TAGS in $REPO (none: the blobs alone, a repository without tags); print the
# manifest's digest (hex). A bearer token's curl config line comes on stdin.
# Used by tests/lab/test_prune.py, tests/lab/test_catalog.py and bench/prune.py, which
# set CREATED or CONFIG, REPO, TAGS, CA, URL and MT.
set -e
w=$(mktemp -d); cd "$w"
mkdir r && head -c 65536 /dev/urandom > r/data && tar -C r -cf layer.tar data
diff=$(sha256sum < layer.tar | cut -c1-64); gzip -n layer.tar
ld=$(sha256sum < layer.tar.gz | cut -c1-64); ls=$(wc -c < layer.tar.gz)
if [ -n "$CONFIG" ]; then
  printf '%s' "$CONFIG" > config
else
  printf '{"architecture":"amd64","os":"linux","created":"%s","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$CREATED" "$diff" > config
fi
cd_=$(sha256sum < config | cut -c1-64); cs=$(wc -c < config)
# A blob: POST opens an upload, one PUT with ?digest= closes it.
up() {
  loc=$(curl -sSf -K auth --cacert "$CA" -X POST -D - -o /dev/null \
    "$URL/v2/$REPO/blobs/uploads/" | tr -d '\r' | sed -n 's/^location: *//Ip')
  case "$loc" in http*) ;; *) loc="$URL$loc";; esac
  case "$loc" in *\?*) sep='&';; *) sep='?';; esac
  curl -sSf -K auth --cacert "$CA" -X PUT -H 'Content-Type: application/octet-stream' \
    --data-binary "@$1" -o /dev/null "$loc${sep}digest=sha256:$2"
}
cat > auth
up layer.tar.gz "$ld"; up config "$cd_"
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":%s,"digest":"sha256:%s"},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":%s,"digest":"sha256:%s"}]}' "$MT" "$cs" "$cd_" "$ls" "$ld" > manifest
for tag in $TAGS; do
  curl -sSf -K auth --cacert "$CA" -X PUT -H "Content-Type: $MT" --data-binary @manifest -o /dev/null "$URL/v2/$REPO/manifests/$tag"
done
sha256sum < manifest | cut -c1-64
cd /; rm -rf "$w"
