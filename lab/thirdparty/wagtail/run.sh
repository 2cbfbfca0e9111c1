#!/usr/bin/env bash
# forkguard lab --app on Wagtail 7.0.10 (Django 5.2), from PyPI, unpatched: the project that
# Wagtail's own `wagtail start` makes, deployed as its Dockerfile does (production settings,
# collectstatic, `manage.py migrate`), with the database set in its settings/local.py.
#
#   lab/thirdparty/wagtail/run.sh [forkguard lab options...]
#   e.g. nice -n 19 lab/thirdparty/wagtail/run.sh --requests 100 --budget 240
#
# Builds .thirdparty/wagtail/{venv,project} (git-ignored) the first time, then runs the lab
# once per database: FG_DBS (default "mysql postgresql") picks them, each run writing to
# $FG_OUT/<db> (default /tmp/thirdparty-wagtail/<db>). WAGTAIL_DB_CONN_MAX_AGE (default 0, the
# template's) is passed to the app. Options given here are passed through to `forkguard lab`
# after ours. Exit status: the worst of the lab runs' (0 = every forkguard cell clean).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
base=${FG_THIRDPARTY_DIR:-$repo/.thirdparty/wagtail}
venv=$base/venv
project=$base/project
python=${PYTHON:-python3}
out_base=${FG_OUT:-/tmp/thirdparty-wagtail}
read -r -a dbs <<<"${FG_DBS:-mysql postgresql}"

if [[ ! -x $venv/bin/forkguard ]]; then
  echo "run.sh: building $venv (wagtail 7.0.10, forkguard, forkguard-lab)" >&2
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet -r "$here/requirements.txt" -e "$repo" -e "$repo/lab"
fi
if [[ ! -f $project/manage.py ]]; then
  echo "run.sh: making $project with 'wagtail start mysite'" >&2
  mkdir -p "$project"
  "$venv/bin/wagtail" start mysite "$project"
fi
ln -sf "$here/local.py" "$project/mysite/settings/local.py"
if [[ ! -f $project/static/staticfiles.json ]]; then
  (cd "$project" && DJANGO_SETTINGS_MODULE=mysite.settings.production \
    "$venv/bin/python" manage.py collectstatic --noinput --clear >/dev/null)
fi

setup="$(printf '%q manage.py migrate --noinput' "$venv/bin/python")"
rc=0
for db in "${dbs[@]}"; do
  case $db in
    mysql | postgresql) ;;
    *) echo "run.sh: FG_DBS: unknown database $db (mysql, postgresql)" >&2; exit 2 ;;
  esac
  echo "run.sh: wagtail on $db -> $out_base/$db" >&2
  status=0
  "$venv/bin/forkguard" lab --app mysite.wsgi --chdir "$project" \
    --name "Wagtail 7.0.10" \
    --url / --url '/search/?query=welcome' --url '/search/?query=home' \
    --env DJANGO_SETTINGS_MODULE=mysite.settings.production \
    --env "WAGTAIL_DB_BACKEND=$db" \
    --env "WAGTAIL_DB_NAME={$db.name}" --env "WAGTAIL_DB_HOST={$db.host}" \
    --env "WAGTAIL_DB_PORT={$db.port}" --env "WAGTAIL_DB_USER={$db.user}" \
    --env "WAGTAIL_DB_PASSWORD={$db.password}" \
    --env "WAGTAIL_DB_CONN_MAX_AGE=${WAGTAIL_DB_CONN_MAX_AGE:-0}" \
    --setup "$setup" \
    --out "$out_base/$db" "$@" || status=$?
  if ((status > rc)); then rc=$status; fi
done
exit "$rc"
