-- The cluster registry as the database sees it (no credentials), every job's outcome, and the
-- snapshot each (cluster, table) currently shows. The data tables themselves are created from
-- the table catalog at startup (shared/src/store.rs), since their columns follow the registry.

CREATE SCHEMA IF NOT EXISTS kubecensus_partitions;

CREATE TABLE clusters (
    name          text PRIMARY KEY,
    server        text,
    cluster_uid   text,
    fields        jsonb NOT NULL DEFAULT '{}',
    registered_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    last_contact  timestamptz
);

CREATE TABLE runs (
    run_id          uuid PRIMARY KEY,
    -- NULL only for a rejected message that could not be read.
    job_id          uuid,
    cluster_name    text,
    table_name      text,
    trigger         text,
    attempt         integer NOT NULL,
    worker_id       text NOT NULL,
    scheduled_at    timestamptz NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    heartbeat_at    timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    status          text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'retrying', 'skipped', 'superseded', 'rejected', 'abandoned')),
    rows_written    bigint,
    objects_skipped integer NOT NULL DEFAULT 0,
    duration        interval GENERATED ALWAYS AS (finished_at - started_at) STORED,
    error           text
);
CREATE INDEX runs_by_cluster_table ON runs (cluster_name, table_name, started_at DESC);
CREATE INDEX runs_by_job ON runs (job_id);
CREATE INDEX runs_running ON runs (status) WHERE status = 'running';

-- One row per (cluster, table): which partition holds the cluster's rows now, and from which job.
CREATE TABLE snapshots (
    cluster_name  text NOT NULL,
    table_name    text NOT NULL,
    partition     text NOT NULL,
    job_id        uuid NOT NULL,
    run_id        uuid NOT NULL,
    scheduled_at  timestamptz NOT NULL,
    swapped_at    timestamptz NOT NULL DEFAULT now(),
    row_count     bigint NOT NULL,
    PRIMARY KEY (cluster_name, table_name)
);
