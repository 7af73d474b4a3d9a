-- How far behind a reader's copy is, beside each cluster's freshness (README, "Scaling out").
-- On a hot standby, `kubecensus_replay_lag()` is the time since the last transaction it replayed
-- committed on the primary (pg_last_xact_replay_timestamp), or zero when it has replayed all the
-- WAL it received; on the primary it is NULL. PostgreSQL docs, "System Administration Functions",
-- Recovery Information Functions. A standby cut off from its primary receives nothing and so
-- shows zero: pg_stat_wal_receiver says whether it is streaming.
CREATE FUNCTION kubecensus_replay_lag() RETURNS interval LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN NOT pg_is_in_recovery() THEN NULL
        WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN interval '0'
        ELSE greatest(now() - pg_last_xact_replay_timestamp(), interval '0')
    END
$$;

-- Per (cluster, table): the snapshot readers see, its age by the reader's clock (on a standby,
-- replay lag included), and the replay lag itself.
CREATE VIEW cluster_freshness WITH (security_invoker = true) AS
    SELECT cluster_name, table_name, row_count, swapped_at,
           now() - swapped_at AS snapshot_age,
           kubecensus_replay_lag() AS replay_lag
    FROM snapshots;
