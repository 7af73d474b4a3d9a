-- Event history (shared/src/store/event_history.rs). The history table itself, `event_history`,
-- is created at start-up from the catalog's `kubernetes_events` columns (as the data tables are),
-- range-partitioned by `created` with its partitions in this schema.
CREATE SCHEMA IF NOT EXISTS kubecensus_history;
-- How long the cluster's API server keeps an event after its last update (its `--event-ttl`;
-- the registry's `event_lifetime`, 1 hour by default, as the API server's).
ALTER TABLE clusters ADD COLUMN event_lifetime interval NOT NULL DEFAULT '1 hour';
-- A stretch of time in which events of the cluster may have come and gone unseen: the events
-- listing at `gap_to` (run `run_id`) came longer than the cluster's event lifetime after the one
-- before it, at `gap_from`. Written in the same transaction as that listing's rows.
CREATE TABLE event_gaps (
    cluster_name text NOT NULL,
    gap_from     timestamptz NOT NULL,
    gap_to       timestamptz NOT NULL,
    reason       text NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    run_id       uuid NOT NULL
);
CREATE INDEX event_gaps_by_cluster ON event_gaps (cluster_name, gap_to DESC);
