#!/usr/bin/env bash
# Copies OpenSSH's sftp-server (Debian's openssh-sftp-server), the shared libraries it loads and their
# dynamic loader (as ld.so) into one folder: mounted read-only at /.essh/sftp in every session container
# (host/containers.ts), it serves the portal's SFTP in any image, one with no libc or sftp-server of its
# own included. scripts/setup.sh and the build (server/build.ts) run it:
#   bash scripts/sftp-server-folder.sh OUT_DIR
# Quiet and quick when OUT_DIR already holds a copy at least as new as the host's sftp-server.
set -euo pipefail
out=${1:?usage: scripts/sftp-server-folder.sh OUT_DIR}
src=/usr/lib/openssh/sftp-server
if [ ! -x "$src" ]; then
  echo "essh setup: $src is missing: install Debian's openssh-sftp-server (the portal's file transfer runs it in session containers)" >&2
  exit 1
fi
[ -x "$out/sftp-server" ] && [ ! "$src" -nt "$out/sftp-server" ] && [ -x "$out/ld.so" ] && exit 0
tmp=$(mktemp -d "$out.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# The container's user reads and runs them: mktemp's folder is its owner's only.
chmod 755 "$tmp"
cp "$src" "$tmp/sftp-server"
# ldd's lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)", "/lib64/ld-linux-x86-64.so.2 (0x…)",
# and the kernel's "linux-vdso.so.1 (0x…)", which is no file.
while read -r name arrow file _; do
  if [ "$arrow" = "=>" ] && [[ $file == /* ]]; then
    cp -L "$file" "$tmp/$name"
  elif [[ $name == /* ]]; then
    # One name whatever the architecture's loader is called: host/containers.ts SFTP_SERVER_COMMAND runs it.
    cp -L "$name" "$tmp/ld.so"
  fi
done < <(ldd "$src")
[ -x "$tmp/ld.so" ] || { echo "essh setup: ldd named no dynamic loader for $src" >&2; exit 1; }
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
