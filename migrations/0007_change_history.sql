-- Change history and retention (shared/src/store/changes.rs, shared/src/store/retention.rs).
--
-- History tables are partitioned by day in the schema kubecensus_history (`<table>_pYYYYMMDD`,
-- made ahead by the scheduler, which drops the old ones), each with a DEFAULT partition that
-- catches rows no daily partition covers (before the first upkeep, or very old ones).
CREATE SCHEMA IF NOT EXISTS kubecensus_history;

-- Every object a replace created, updated or deleted, at the listing's time.
CREATE TABLE object_changes (
    changed_at           timestamptz NOT NULL,
    cluster_name         text NOT NULL,
    table_name           text NOT NULL,
    namespace            text,
    name                 text,
    uid                  text NOT NULL,
    change               text NOT NULL CHECK (change IN ('created', 'updated', 'deleted')),
    old_resource_version text,
    new_resource_version text,
    job_id               uuid NOT NULL,
    run_id               uuid NOT NULL,
    -- {"column": {"old": ..., "new": ...}} for the tables with column diffs, else NULL.
    changed_columns      jsonb
) PARTITION BY RANGE (changed_at);
CREATE TABLE kubecensus_history.object_changes_default PARTITION OF object_changes DEFAULT;
CREATE INDEX object_changes_by_cluster ON object_changes (cluster_name, changed_at DESC);
CREATE INDEX object_changes_by_object ON object_changes (cluster_name, table_name, namespace, name, changed_at DESC);

-- Where each (cluster, job target)'s history starts: its first load, which records no `created`.
CREATE TABLE change_baselines (
    cluster_name text NOT NULL,
    table_name   text NOT NULL,
    baseline_at  timestamptz NOT NULL,
    job_id       uuid NOT NULL,
    run_id       uuid NOT NULL,
    objects      bigint NOT NULL,
    PRIMARY KEY (cluster_name, table_name)
);

-- `runs` partitioned by `started_at`: the existing table becomes its DEFAULT partition (no row
-- is copied; retention deletes its old rows in batches), so the primary key includes
-- `started_at`.
ALTER TABLE runs SET SCHEMA kubecensus_history;
ALTER TABLE kubecensus_history.runs RENAME TO runs_default;
ALTER INDEX kubecensus_history.runs_pkey RENAME TO runs_default_run_id;
ALTER INDEX kubecensus_history.runs_by_cluster_table RENAME TO runs_default_by_cluster_table;
ALTER INDEX kubecensus_history.runs_by_job RENAME TO runs_default_by_job;
ALTER INDEX kubecensus_history.runs_running RENAME TO runs_default_running;
CREATE TABLE runs (LIKE kubecensus_history.runs_default INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (started_at);
ALTER TABLE runs ADD PRIMARY KEY (run_id, started_at);
CREATE INDEX runs_by_cluster_table ON runs (cluster_name, table_name, started_at DESC);
CREATE INDEX runs_by_job ON runs (job_id);
CREATE INDEX runs_running ON runs (status) WHERE status = 'running';
ALTER TABLE kubecensus_history.runs_default DROP CONSTRAINT runs_default_run_id;
ALTER TABLE runs ATTACH PARTITION kubecensus_history.runs_default DEFAULT;
