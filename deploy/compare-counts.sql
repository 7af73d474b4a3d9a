-- Compares the rows PostgreSQL holds per cluster with the simulator's object counts (psql
-- variable :counts, the JSON of the simulator's GET /counts). Fails when any count differs.
-- Prints every count with -v verbose=on, else only those that differ.
\set QUIET on
\pset footer off
CREATE TEMP TABLE expected AS
SELECT c.key AS cluster_name, r.key AS resource, r.value::bigint AS objects
FROM json_each(:'counts'::json) c, json_each_text(c.value) r;

CREATE TEMP TABLE comparison AS
SELECT e.cluster_name, e.resource, e.objects AS simulator,
       CASE e.resource
         WHEN 'pods' THEN (SELECT count(*) FROM kubernetes_pods p WHERE p.cluster_name = e.cluster_name)
         WHEN 'nodes' THEN (SELECT count(*) FROM kubernetes_nodes n WHERE n.cluster_name = e.cluster_name)
         WHEN 'namespaces' THEN (SELECT count(*) FROM kubernetes_namespaces n WHERE n.cluster_name = e.cluster_name)
       END AS postgres
FROM expected e
WHERE e.resource IN ('pods', 'nodes', 'namespaces');

SELECT count(*) = 0 AS all_equal, count(*) AS differing FROM comparison WHERE simulator IS DISTINCT FROM postgres \gset
SELECT count(*) AS compared FROM comparison \gset
\if :verbose
SELECT *, CASE WHEN simulator = postgres THEN 'equal' ELSE 'DIFFERENT' END AS check FROM comparison ORDER BY 1, 2;
\elif :all_equal
\else
SELECT *, 'DIFFERENT' AS check FROM comparison WHERE simulator IS DISTINCT FROM postgres ORDER BY 1, 2;
\endif
\if :all_equal
\echo 'every count equals the simulator''s (namespaces, nodes and pods of each cluster:' :compared 'counts)'
\else
\echo :differing 'of' :compared 'counts differ'
\quit 1
\endif
