#!/usr/bin/env bash
# Builds the images the demo app and the tests use from Debian's busybox-static, with `docker import`,
# since no registry is reachable. Rebuilt only when missing or when this script changes.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${ESSH_DEMO_IMAGE:-essh/demo:latest}
recipe_hash=$(sha256sum scripts/build-images.sh | cut -c1-16)
current=$(docker image inspect -f '{{ index .Config.Labels "essh.recipe" }}' "$IMAGE" 2>/dev/null || true)
[ "$current" = "$recipe_hash" ] && exit 0

if ! dpkg -s busybox-static >/dev/null 2>&1; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
fi
echo "essh setup: building image $IMAGE from busybox-static" >&2
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs"/{bin,etc,tmp,root,home/app,app,proc,sys,dev,var/tmp}
chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for cmd in $("$rootfs/bin/busybox" --list); do
  [ -e "$rootfs/bin/$cmd" ] || ln -s busybox "$rootfs/bin/$cmd"
done
cat >"$rootfs/etc/passwd" <<'PW'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PW
cat >"$rootfs/etc/group" <<'GR'
root:x:0:
app:x:1000:
nogroup:x:65534:
GR
chown -R 1000:1000 "$rootfs/home/app" "$rootfs/app"
echo 'export PS1="\u@\h:\w\$ "' >"$rootfs/etc/profile"
tar -C "$rootfs" -c . | docker import \
  -c 'CMD ["/bin/sh", "-l"]' -c 'ENV PATH=/bin' -c 'WORKDIR /app' \
  -c "LABEL essh.recipe=$recipe_hash" - "$IMAGE" >/dev/null
