#!/usr/bin/env bash
# Starts Debian's PostgreSQL cluster (installing it if missing) and makes an `essh` role that may
# create databases: the tests make one database per test file. `--url` prints the server URL only.
set -euo pipefail
URL="postgres://essh:essh@127.0.0.1:5432"
if [ "${1:-}" = "--url" ]; then echo "$URL"; exit 0; fi
cd "$(dirname "$0")/.."
bash scripts/packages.sh postgres
cluster=$(pg_lsclusters -h | awk 'NR==1 {print $1" "$2}')
if [ -z "$cluster" ]; then
  pg_createcluster 15 main >/dev/null
  cluster="15 main"
fi
# shellcheck disable=SC2086
pg_ctlcluster $cluster start >/dev/null 2>&1 || true
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 && break; sleep 0.5; done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='essh'\"" | grep -q 1 \
  || su postgres -c "psql -qc \"CREATE ROLE essh LOGIN PASSWORD 'essh' CREATEDB\""
# `DROP DATABASE … WITH (FORCE)` must also end an autovacuum worker that happens to be in the test
# database; those run as no role, so only pg_signal_backend lets a non-superuser end them.
su postgres -c "psql -qc \"SET client_min_messages = warning; GRANT pg_signal_backend TO essh\"" >/dev/null
