//! The schema stays ready for a distributed PostgreSQL (README, "Scaling out": Citus, every
//! table with clusters' rows distributed by `cluster_name`, the registry `clusters` a reference
//! table): Citus requires a distributed table's primary key and unique indexes to include the
//! distribution column, and foreign keys only between co-located tables on it or to reference
//! tables (Citus docs, "Creating and Modifying Distributed Objects (DDL)"). Read from
//! PostgreSQL's own catalog, so that tables added later (by a migration or the table catalog)
//! are checked too.

use sqlx::PgPool;

use super::tests::prepared;

/// Tables with a `cluster_name` column that are not distributed in the design, and why.
const NOT_DISTRIBUTED: [(&str, &str); 1] =
    [("runs", "the job log: keyed by run id, a NULL cluster for an unreadable message; a coordinator table")];

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn every_key_of_a_table_of_clusters_rows_includes_the_cluster_and_no_constraint_spans_clusters(pool: PgPool) {
    prepared(&pool).await;
    let exempt: Vec<&str> = NOT_DISTRIBUTED.iter().map(|(table, _)| *table).collect();
    // Tables (partitioned parents and plain ones; partitions follow their parent) with clusters' rows.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
           AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'cluster_name' AND NOT a.attisdropped)
           AND c.relname <> ALL($1)
         ORDER BY 1",
    )
    .bind(&exempt)
    .fetch_all(&pool)
    .await
    .unwrap();
    for table in ["kubernetes_pods", "kubernetes_pod_containers", "kubernetes_custom_resources", "snapshots"] {
        assert!(tables.iter().any(|t| t == table), "{table} is checked: {tables:?}");
    }
    let keys_without_cluster: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, i.relname::text FROM pg_index x
         JOIN pg_class c ON c.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid
         WHERE (x.indisunique OR x.indisprimary) AND c.relname = ANY($1) AND NOT c.relispartition
           AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                           WHERE a.attrelid = c.oid AND a.attname = 'cluster_name' AND a.attnum = ANY(x.indkey))
         ORDER BY 1, 2",
    )
    .bind(&tables)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(keys_without_cluster.is_empty(), "keys without cluster_name: {keys_without_cluster:?}");
    // Foreign keys (and exclusion constraints) of any table: to the registry, or on the
    // cluster on both sides.
    let spanning: Vec<(String, String)> = sqlx::query_as(
        "SELECT k.conrelid::regclass::text, k.conname::text FROM pg_constraint k
         WHERE k.contype IN ('f', 'x') AND k.connamespace NOT IN (SELECT oid FROM pg_namespace WHERE nspname LIKE 'pg_%')
           AND NOT (k.contype = 'f' AND k.confrelid = 'clusters'::regclass)
           AND NOT (EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = k.conrelid AND a.attname = 'cluster_name' AND a.attnum = ANY(k.conkey))
                    AND (k.contype = 'x' OR EXISTS (SELECT 1 FROM pg_attribute a
                         WHERE a.attrelid = k.confrelid AND a.attname = 'cluster_name' AND a.attnum = ANY(k.confkey))))
         ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(spanning.is_empty(), "constraints that span clusters: {spanning:?}");
}
