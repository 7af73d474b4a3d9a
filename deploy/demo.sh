#!/usr/bin/env bash
# The main job, end to end: services up, a simulated fleet (or your kubeconfig), migrations,
# one refresh of every (cluster, table) through JetStream, two workers, then a summary per
# cluster, a check that PostgreSQL holds what the simulated clusters serve, the example queries
# and the fleet's health. The database keeps only this run's clusters: the clusters of an
# earlier demo that are not in this run's registry are pruned first (`scheduler prune`).
#   deploy/demo.sh                             # a simulated fleet of 3 clusters
#   KUBECONFIG=~/.kube/config deploy/demo.sh   # every context of your kubeconfig
#   DEMO_VERBOSE=1 deploy/demo.sh              # every job's run and rows, not a summary
# Every job's run and rows are written to $DEMO_DIR/report.txt either way.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTERS=${CLUSTERS:-3}
PODS=${PODS:-200}
WORK=${DEMO_DIR:-$PWD/.demo}
ADMIN=127.0.0.1:${ADMIN_PORT:-18080}
export DATABASE_URL=${DATABASE_URL:-postgres://kubecensus@127.0.0.1:5432/kubecensus}
export NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
export KUBECENSUS_REGISTRY=$WORK/clusters.yaml
VERBOSE=${DEMO_VERBOSE:-}

bash deploy/services.sh
cargo build --quiet --bins
BIN=${CARGO_TARGET_DIR:-target}/debug

rm -rf "$WORK" && mkdir -p "$WORK"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

if [ -n "${KUBECONFIG:-}" ]; then
  echo "== registry from $KUBECONFIG"
  "$BIN/scheduler" import-kubeconfig "$KUBECONFIG" >"$WORK/clusters.yaml"
else
  echo "== simulated fleet: $CLUSTERS clusters, $PODS pods each (logs in $WORK/fleet.log)"
  "$BIN/fleet-sim" --clusters "$CLUSTERS" --pods "$PODS" --namespaces 8 --nodes 5 --out "$WORK" --admin "$ADMIN" \
    >"$WORK/fleet.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do [ -e "$WORK/ready" ] && break; sleep 0.1; done
  [ -e "$WORK/ready" ] || { cat "$WORK/fleet.log"; echo "the simulated fleet did not start"; exit 1; }
fi
if [ -n "$VERBOSE" ]; then
  cat "$WORK/clusters.yaml"
else
  echo "registry $WORK/clusters.yaml: $(sed -n 's/^- name: //p' "$WORK/clusters.yaml" | paste -sd ' ')"
fi

echo "== pruning the clusters of earlier demos from the database (those not in this registry)"
"$BIN/scheduler" prune

echo "== two workers (logs in $WORK/worker-*.log)"
for n in 1 2; do
  "$BIN/worker" --worker-id "demo-worker-$n" --concurrency 4 >"$WORK/worker-$n.log" 2>&1 &
  pids+=($!)
done

echo "== refresh every (cluster, table) and wait for the runs"
if [ -n "$VERBOSE" ]; then
  "$BIN/scheduler" refresh --wait
else
  "$BIN/scheduler" refresh --wait --summary
fi
"$BIN/scheduler" report >"$WORK/report.txt"
echo "every run and the rows of each table: $WORK/report.txt (DEMO_VERBOSE=1 make demo prints them)"

if [ -z "${KUBECONFIG:-}" ]; then
  echo "== PostgreSQL against the simulator's own counts"
  exec 3<>"/dev/tcp/${ADMIN%:*}/${ADMIN#*:}"
  printf 'GET /counts HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
  counts=$(sed '1,/^\r$/d' <&3)
  exec 3<&-
  psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -v counts="$counts" -v verbose="$([ -n "$VERBOSE" ] && echo on || echo off)" -f deploy/compare-counts.sql
fi
psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f deploy/demo-queries.sql

echo "== the fleet explorer on this data: one command, single-user mode, on loopback"
echo "   $BIN/scheduler explore --single-user   # then open http://127.0.0.1:8090/"
echo "   (DATABASE_URL=$DATABASE_URL; the JSON API is described in docs/explorer-openapi.yaml)"
