#!/usr/bin/env bash
# Start a private PostgreSQL cluster on 127.0.0.1 for the multi-worker tests; print its URL.
# Usage: eval "$(.ci/postgres.sh start)"; ...; .ci/postgres.sh stop
set -euo pipefail
PORT=${AUTOML_PG_PORT:-55432}
DIR=/tmp/automl-pg-$PORT
bin() { ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | tail -n 1; }
case "${1:-start}" in
start)
  "$0" stop
  if [ -z "$(bin initdb)" ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
  fi
  id postgres >/dev/null 2>&1 || useradd --system postgres
  rm -rf "$DIR" && mkdir -p "$DIR" && chown postgres "$DIR"
  su postgres -s /bin/sh -c "$(bin initdb) -D $DIR/data -A trust -U postgres" >/dev/null
  su postgres -s /bin/sh -c "$(bin pg_ctl) -D $DIR/data -l $DIR/log -w -o '-p $PORT -k $DIR -c listen_addresses=127.0.0.1' start" >/dev/null
  su postgres -s /bin/sh -c "$(bin createdb) -h 127.0.0.1 -p $PORT -U postgres automl_test"
  echo "export AUTOML_TEST_POSTGRES=postgresql://postgres@127.0.0.1:$PORT/automl_test"
  ;;
stop)
  [ -d "$DIR/data" ] && su postgres -s /bin/sh -c "$(bin pg_ctl) -D $DIR/data -m fast stop" >/dev/null || true
  ;;
esac
