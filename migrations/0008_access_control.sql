-- Access control enforced inside PostgreSQL (shared/src/store/access/): who may list what in
-- each cluster, replayed from the cluster's own RBAC tables, and row-level security for the
-- members of `kubecensus_viewer`.

-- The two group roles, NOLOGIN. Roles belong to the whole server, not to this database, and
-- several databases migrate at once (tests, one database each): a role another migration
-- creates meanwhile is not an error. A service role without CREATEROLE creates neither (a
-- warning): access control then stays off (shared/src/store/access/mod.rs) until an
-- administrator creates them or grants CREATEROLE.
DO $$
DECLARE
  name text;
BEGIN
  FOREACH name IN ARRAY ARRAY['kubecensus_viewer', 'kubecensus_explorer'] LOOP
    CONTINUE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name);
    IF NOT (SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user) THEN
      RAISE WARNING 'kubecensus: role % is missing and % may not create roles: access control is off', name, current_user;
      CONTINUE;
    END IF;
    BEGIN
      EXECUTE format('CREATE ROLE %I NOLOGIN', name);
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
      NULL;
    END;
  END LOOP;
END
$$;

-- How the cluster authorizes requests: `rbac` (its RBAC objects say everything: they are
-- replayed), or `webhook` (EKS access entries, GKE IAM, AKS Azure RBAC also grant: its RBAC is
-- not the whole truth, so only an identity given for this very cluster applies).
ALTER TABLE clusters ADD COLUMN authorization_mode text NOT NULL DEFAULT 'rbac'
  CHECK (authorization_mode IN ('rbac', 'webhook'));

-- Which Kubernetes user and groups a PostgreSQL role is, fleet-wide (cluster_name NULL) or in
-- one cluster (which then takes precedence there). Managed by `scheduler access`.
CREATE TABLE access_identities (
    role_name    text NOT NULL,
    cluster_name text,
    k8s_user     text NOT NULL,
    k8s_groups   text[] NOT NULL DEFAULT '{}',
    granted_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (role_name, cluster_name)
);

-- What a cluster's RBAC lets `list`, in two parts rewritten for the cluster by every replace of
-- its RBAC tables, in that transaction: who each binding binds, where (namespace NULL: every
-- namespace and the cluster-scoped resources, a ClusterRoleBinding), to which rules
-- (`grant_key`: `ClusterRole/<name>` or `Role/<namespace>/<name>`); and the (API group,
-- resource) each role's rules let list, `*` as the rule says. Service accounts are named as their
-- user, `system:serviceaccount:<namespace>:<name>`. A role's rules are kept once, not once per
-- binding: a ClusterRole bound in 3,000 namespaces is 3,000 binding rows.
CREATE TABLE access_bindings (
    cluster_name      text NOT NULL,
    subject_kind      text NOT NULL,
    subject_name      text NOT NULL,
    namespace         text,
    binding_kind      text NOT NULL,
    binding_namespace text,
    binding_name      text NOT NULL,
    role_kind         text NOT NULL,
    role_name         text NOT NULL,
    grant_key         text NOT NULL
);
CREATE INDEX access_bindings_by_cluster ON access_bindings (cluster_name, subject_name);
CREATE TABLE access_role_rules (
    cluster_name text NOT NULL,
    grant_key    text NOT NULL,
    api_group    text NOT NULL,
    resource     text NOT NULL
);
CREATE INDEX access_role_rules_by_grant ON access_role_rules (cluster_name, grant_key);
-- The effective permissions: every (subject, API group, resource, namespace) a binding lets
-- list, with the binding and the role that grant it.
CREATE VIEW access_permissions AS
  SELECT b.cluster_name, b.subject_kind, b.subject_name, r.api_group, r.resource, b.namespace,
         b.binding_kind, b.binding_namespace, b.binding_name, b.role_kind, b.role_name
  FROM access_bindings b JOIN access_role_rules r USING (cluster_name, grant_key);

-- The kinds each grant shows in a cluster: its rules' (group, resource) pairs matched to the
-- resources the cluster serves (the catalog's and its discovery's), with whether each is
-- namespaced. Rewritten with the cluster's permissions and at each replace of its discovery.
CREATE TABLE access_grant_kinds (
    cluster_name text NOT NULL,
    grant_key    text NOT NULL,
    api_group    text NOT NULL,
    kind         text NOT NULL,
    namespaced   boolean NOT NULL
);
CREATE INDEX access_grant_kinds_by_kind ON access_grant_kinds (api_group, kind, cluster_name, grant_key);
-- Where each PostgreSQL role's grants apply: (cluster, grant, namespace), namespace '*' for every
-- namespace and the cluster-scoped objects. Rewritten for a cluster with its permissions, and for
-- a role at grant time.
CREATE TABLE access_visible_namespaces (
    role_name    text NOT NULL,
    cluster_name text NOT NULL,
    grant_key    text NOT NULL,
    namespace    text NOT NULL
);
CREATE INDEX access_visible_namespaces_by_role ON access_visible_namespaces (role_name, cluster_name, grant_key);
CREATE INDEX access_visible_namespaces_by_cluster ON access_visible_namespaces (cluster_name);
-- What each role may see: (cluster, API group, kind, namespace or '*'); the row-level security
-- policies read it for `current_user`. A cluster-scoped kind only where the grant is cluster-wide.
CREATE VIEW access_visible WITH (security_invoker = true) AS
  SELECT n.role_name, n.cluster_name, k.api_group, k.kind, n.namespace
  FROM access_visible_namespaces n JOIN access_grant_kinds k USING (cluster_name, grant_key)
  WHERE k.namespaced OR n.namespace = '*';

-- The API group and kind of each native catalog table, for the tables whose rows name their
-- table (history), rewritten at start-up from the catalog.
CREATE TABLE access_tables (
    table_name text PRIMARY KEY,
    api_group  text NOT NULL,
    kind       text NOT NULL
);
