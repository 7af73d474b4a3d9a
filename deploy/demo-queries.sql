-- What the demo shows of the data, whichever clusters it loaded: the two design example queries
-- (README "Example queries") and the fleet's health (README "Custom resources and fleet health").
\set QUIET on
\pset footer off
\echo '== example queries'
select region, count(distinct cluster_name) cluster_cnt, count(distinct namespace) ns_count, count(*) pod_cnt from kubernetes_pods group by region;
select c.image, count(*) pod_cnt from kubernetes_pod_containers c group by c.image order by count(*) desc limit 10;
\echo '== fleet health: objects not Current by kind, then the first page of them'
select api_group, kind, health, count(*) from fleet_unhealthy_objects group by 1, 2, 3 order by 1, 2, 3;
select cluster_name, namespace, kind, name, health, left(message, 60) message from fleet_unhealthy_objects
where (cluster_name, namespace, name, uid) > ('', '', '', '') order by cluster_name, namespace, name, uid limit 10;
