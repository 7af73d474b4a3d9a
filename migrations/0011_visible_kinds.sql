-- What each role sees, kept so that a policy reads it once per query (shared/src/store/access/
-- policies.rs): every row of `access_visible_namespaces` now carries the kinds it shows, as
-- `<api group>/<Kind>` sorted (every kind of its grant where its namespace is '*', the grant's
-- namespaced kinds elsewhere), and `kind_set`, the md5 of that list, so rows that show the same
-- kinds are known as one set. A role's rows are few (one per binding that applies to it, in
-- each cluster), never the cross product of its namespaces and kinds. Rewritten by
-- `permissions::write_visible`; the rows written before this migration are rewritten by the
-- next recompute of their cluster or role, and until then show nothing (an empty list).
ALTER TABLE access_visible_namespaces ADD COLUMN kinds text[] NOT NULL DEFAULT '{}';
ALTER TABLE access_visible_namespaces ADD COLUMN kind_set text NOT NULL DEFAULT '';
UPDATE access_visible_namespaces n SET kinds = k.kinds, kind_set = md5(array_to_string(k.kinds, ','))
FROM (
  SELECT n.role_name, n.cluster_name, n.grant_key, n.namespace,
         array_agg(DISTINCT g.api_group || '/' || g.kind ORDER BY g.api_group || '/' || g.kind) AS kinds
  FROM access_visible_namespaces n
  JOIN access_grant_kinds g ON g.cluster_name = n.cluster_name AND g.grant_key = n.grant_key
  WHERE g.namespaced OR n.namespace = '*'
  GROUP BY 1, 2, 3, 4
) k
WHERE (n.role_name, n.cluster_name, n.grant_key, n.namespace) = (k.role_name, k.cluster_name, k.grant_key, k.namespace);
DELETE FROM access_visible_namespaces WHERE kinds = '{}';

-- The same rows, one per kind, for people and tests (the policies read the table).
CREATE OR REPLACE VIEW access_visible WITH (security_invoker = true) AS
  SELECT n.role_name, n.cluster_name, split_part(k.kind, '/', 1) AS api_group, split_part(k.kind, '/', 2) AS kind,
         n.namespace
  FROM access_visible_namespaces n CROSS JOIN LATERAL unnest(n.kinds) AS k(kind);
