-- Decommissioned clusters (shared/src/store/prune.rs): since when a cluster has been missing
-- from every registry source, when it was pruned, and the `pruned` run that records it.
ALTER TABLE clusters ADD COLUMN absent_since timestamptz, ADD COLUMN removed_at timestamptz;
ALTER TABLE runs DROP CONSTRAINT runs_status_check,
  ADD CONSTRAINT runs_status_check CHECK (status IN ('running', 'succeeded', 'failed', 'retrying', 'skipped',
    'superseded', 'rejected', 'abandoned', 'handed_back', 'pruned'));
