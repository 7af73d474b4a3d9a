-- The hash-partitioned layout (shared/src/store/schema.rs): a snapshot no longer names a
-- partition; every run records how many rows it inserted and deleted (only changed rows are
-- written).
ALTER TABLE snapshots DROP COLUMN partition;
ALTER TABLE runs ADD COLUMN rows_inserted bigint, ADD COLUMN rows_deleted bigint;
-- A job given back to the queue by a stopping worker (it costs no attempt).
ALTER TABLE runs DROP CONSTRAINT runs_status_check,
  ADD CONSTRAINT runs_status_check CHECK (status IN ('running', 'succeeded', 'failed', 'retrying', 'skipped',
    'superseded', 'rejected', 'abandoned', 'handed_back'));
