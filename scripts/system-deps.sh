#!/usr/bin/env bash
# System packages forkguard's tests and lab need: mysqlclient builds against the MariaDB client
# headers (pkg-config finds them); uWSGI compiles with gcc; the lab and the fault tests start
# private MariaDB and PostgreSQL servers. Installs only what is missing.
set -euo pipefail
missing=()
pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null \
  || missing+=(libmariadb-dev)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v gcc >/dev/null || missing+=(gcc)
[ -x /usr/sbin/mariadbd ] || command -v mariadbd >/dev/null || missing+=(mariadb-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
# The doctor's pooler tests put a private PgBouncer in front of PostgreSQL.
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v openssl >/dev/null || missing+=(openssl)
# The Celery tests use Redis as broker and result backend.
command -v redis-server >/dev/null || missing+=(redis-server)
# The benchmark counts instructions per checkout with callgrind (machine-load independent).
command -v valgrind >/dev/null || missing+=(valgrind)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "forkguard: missing system packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "forkguard: installing system packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
