#!/usr/bin/env bash
# Starts the shared local MariaDB (127.0.0.1:3306) and PostgreSQL (127.0.0.1:5432) if they are
# down, then waits until both answer. Tests that restart or kill a server start private ones.
set -euo pipefail
if ! mariadb-admin -h127.0.0.1 -uroot ping >/dev/null 2>&1; then
  echo "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
if command -v redis-server >/dev/null && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/fg-redis.log
fi
for _ in $(seq 1 60); do
  if mariadb-admin -h127.0.0.1 -uroot ping >/dev/null 2>&1 && pg_isready -h 127.0.0.1 -p 5432 -q; then
    exit 0
  fi
  sleep 1
done
echo "MariaDB or PostgreSQL did not come up on 127.0.0.1" >&2
exit 1
