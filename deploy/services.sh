#!/usr/bin/env bash
# Brings up what kubecensus needs, idempotently: PostgreSQL and nats-server with JetStream on
# loopback (and its HTTP monitoring port, which KEDA's nats-jetstream scaler reads), and the
# `kubecensus` database. On a fresh Debian machine (as root) it installs the
# `postgresql` and `nats-server` packages first; where they already run, it just uses them.
set -euo pipefail

PG_PORT=${PG_PORT:-5432}
NATS_PORT=${NATS_PORT:-4222}
NATS_MONITOR_PORT=${NATS_MONITOR_PORT:-8222}
DB_NAME=${DB_NAME:-kubecensus}
DB_ROLE=${DB_ROLE:-kubecensus}
STATE_DIR=${KUBECENSUS_STATE_DIR:-/var/lib/kubecensus}

say() { echo "services: $*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! command -v pg_ctlcluster >/dev/null || ! command -v nats-server >/dev/null; then
  if ! port_open "$PG_PORT" || ! port_open "$NATS_PORT"; then
    [ "$(id -u)" = 0 ] || { say "PostgreSQL or nats-server is missing; run this as root to install them"; exit 1; }
    say "installing postgresql and nats-server from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q postgresql nats-server >/dev/null
  fi
fi

# PostgreSQL: the Debian cluster is created by the package but not started without systemd.
if ! port_open "$PG_PORT"; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_lsclusters -h | grep -q "^$version main" || pg_createcluster "$version" main
  say "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 50); do port_open "$PG_PORT" && break; sleep 0.2; done
fi
psql_admin() {
  if psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qAtc 'select 1' >/dev/null 2>&1; then
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qAt "$@"
  else
    runuser -u postgres -- psql -p "$PG_PORT" -d postgres -qAt "$@"
  fi
}
# Loopback trust for local development and tests, as on the developers' machines.
if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qAtc 'select 1' >/dev/null 2>&1; then
  hba=$(runuser -u postgres -- psql -p "$PG_PORT" -qAtc 'show hba_file')
  say "allowing trust authentication on 127.0.0.1 in $hba"
  sed -i '/^host\s\+all\s\+all\s\+127.0.0.1\/32/s/\S\+$/trust/; /^host\s\+all\s\+all\s\+::1\/128/s/\S\+$/trust/' "$hba"
  runuser -u postgres -- psql -p "$PG_PORT" -qAtc 'select pg_reload_conf()' >/dev/null
fi
# The role kubecensus runs as: it owns its database and may create databases (tests make their
# own) and roles (access control's group roles and viewers: `scheduler access grant`).
psql_admin -c "select 1 from pg_roles where rolname = '$DB_ROLE'" | grep -q 1 \
  || { say "creating role $DB_ROLE"; psql_admin -c "create role $DB_ROLE login createdb createrole"; }
psql_admin -c "alter role $DB_ROLE createrole" >/dev/null
psql_admin -c "select 1 from pg_database where datname = '$DB_NAME'" | grep -q 1 \
  || { say "creating database $DB_NAME"; psql_admin -c "create database $DB_NAME owner $DB_ROLE"; }
psql_admin -c "alter database $DB_NAME owner to $DB_ROLE" >/dev/null
# The benchmark checkpoints between phases, so that one phase's writes do not slow the next.
psql_admin -c "set client_min_messages = warning" -c "grant pg_checkpoint to $DB_ROLE" >/dev/null

# nats-server with JetStream (file storage) and HTTP monitoring (/jsz, /varz; on the same
# loopback address). A nats-server already running is used as it is, never restarted.
if ! port_open "$NATS_PORT"; then
  mkdir -p "$STATE_DIR/nats"
  monitor=(-m "$NATS_MONITOR_PORT")
  if port_open "$NATS_MONITOR_PORT"; then
    say "port $NATS_MONITOR_PORT is taken: nats-server starts without its monitoring port"
    monitor=()
  fi
  say "starting nats-server with JetStream on 127.0.0.1:$NATS_PORT"
  nohup nats-server -a 127.0.0.1 -p "$NATS_PORT" "${monitor[@]}" -js -sd "$STATE_DIR/nats" >"$STATE_DIR/nats.log" 2>&1 &
  for _ in $(seq 50); do port_open "$NATS_PORT" && break; sleep 0.1; done
fi
port_open "$NATS_PORT" || { say "nats-server did not come up; see $STATE_DIR/nats.log"; exit 1; }
port_open "$NATS_MONITOR_PORT" \
  || say "note: no NATS monitoring on 127.0.0.1:$NATS_MONITOR_PORT; nothing here needs it (only KEDA's nats-jetstream scaler in deploy/kubernetes does: nats-server -m $NATS_MONITOR_PORT)"
say "PostgreSQL on 127.0.0.1:$PG_PORT (database $DB_NAME, role $DB_ROLE), NATS on 127.0.0.1:$NATS_PORT: ready"
