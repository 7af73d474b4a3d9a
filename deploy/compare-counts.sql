-- Compares the rows PostgreSQL holds per cluster with the simulator's object counts (psql
-- variable :counts, the JSON of the simulator's GET /counts). Fails when any count differs.
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

SELECT *, CASE WHEN simulator = postgres THEN 'equal' ELSE 'DIFFERENT' END AS check FROM comparison ORDER BY 1, 2;

\echo '== example queries'
select region, count(distinct cluster_name) cluster_cnt, count(distinct namespace) ns_count, count(*) pod_cnt from kubernetes_pods group by region;
select c.image, count(*) pod_cnt from kubernetes_pod_containers c group by c.image order by count(*) desc limit 10;
\echo '== fleet health: objects not Current by kind, then the first page of them'
select api_group, kind, health, count(*) from fleet_unhealthy_objects group by 1, 2, 3 order by 1, 2, 3;
select cluster_name, namespace, kind, name, health, left(message, 60) message from fleet_unhealthy_objects
where (cluster_name, namespace, name, uid) > ('', '', '', '') order by cluster_name, namespace, name, uid limit 10;

SELECT count(*) = 0 AS all_equal FROM comparison WHERE simulator IS DISTINCT FROM postgres \gset
\if :all_equal
\echo 'every count equals the simulator''s'
\else
\echo 'counts differ'
\quit 1
\endif
