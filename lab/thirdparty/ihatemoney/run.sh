#!/usr/bin/env bash
# forkguard lab --app on I Hate Money 7.2.1 (Flask + Flask-SQLAlchemy), from PyPI, unpatched.
#
#   lab/thirdparty/ihatemoney/run.sh [forkguard lab options...]
#   e.g. nice -n 19 lab/thirdparty/ihatemoney/run.sh --requests 100 --budget 240
#
# Builds .thirdparty/ihatemoney/venv (git-ignored) from requirements.txt the first time, then
# runs the lab once per database: FG_DBS (default "mysql postgresql") picks them, each run
# writing to $FG_OUT/<db> (default /tmp/thirdparty-ihatemoney/<db>). Options given here are
# passed through to `forkguard lab` after ours (so a later --servers, --strategies... wins).
# Exit status: the worst of the lab runs' (0 = every forkguard cell clean).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
venv=${FG_THIRDPARTY_VENV:-$repo/.thirdparty/ihatemoney/venv}
python=${PYTHON:-python3}
out_base=${FG_OUT:-/tmp/thirdparty-ihatemoney}
read -r -a dbs <<<"${FG_DBS:-mysql postgresql}"

if [[ ! -x $venv/bin/forkguard ]]; then
  # ihatemoney 7.2.1 needs Python >= 3.11.
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "run.sh: ihatemoney 7.2.1 needs Python >= 3.11; set PYTHON=python3.11" >&2
    exit 3
  }
  echo "run.sh: building $venv (ihatemoney 7.2.1, forkguard, forkguard-lab)" >&2
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet -r "$here/requirements.txt" -e "$repo" -e "$repo/lab"
fi

setup="$(printf '%q %q' "$venv/bin/python" "$here/setup_demo.py")"
rc=0
for db in "${dbs[@]}"; do
  case $db in
    mysql) url='{mysql+pymysql}' ;;
    postgresql) url='{postgresql+psycopg2}' ;;
    *) echo "run.sh: FG_DBS: unknown database $db (mysql, postgresql)" >&2; exit 2 ;;
  esac
  echo "run.sh: ihatemoney on $db -> $out_base/$db" >&2
  status=0
  "$venv/bin/forkguard" lab --app ihatemoney.wsgi:application --chdir "$here" \
    --name "I Hate Money 7.2.1" \
    --url /demo/ --url /demo/statistics --url /demo/history --url /demo/settle_bills \
    --env "IHATEMONEY_SETTINGS_FILE_PATH=$here/ihatemoney.cfg" \
    --env "IHATEMONEY_DATABASE_URI=$url" \
    --setup "$setup" \
    --out "$out_base/$db" "$@" || status=$?
  if ((status > rc)); then rc=$status; fi
done
exit "$rc"
