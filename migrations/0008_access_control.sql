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

-- Every (subject, API group, resource, namespace) a binding lets `list`, per cluster, with the
-- binding and the role that grant it; `*` as the rule says; namespace NULL: every namespace and
-- the cluster-scoped resources (a ClusterRoleBinding). Service accounts are named as their user,
-- `system:serviceaccount:<namespace>:<name>`. Rewritten for a cluster by every replace of its
-- RBAC tables, in that transaction.
CREATE TABLE access_permissions (
    cluster_name      text NOT NULL,
    subject_kind      text NOT NULL,
    subject_name      text NOT NULL,
    api_group         text NOT NULL,
    resource          text NOT NULL,
    namespace         text,
    binding_kind      text NOT NULL,
    binding_namespace text,
    binding_name      text NOT NULL,
    role_kind         text NOT NULL,
    role_name         text NOT NULL
);
CREATE INDEX access_permissions_by_cluster ON access_permissions (cluster_name, subject_name);

-- What each PostgreSQL role may see: (cluster, API group, kind, namespace), namespace '*' for
-- every namespace and the cluster-scoped objects. The row-level security policies read it for
-- `current_user`; rewritten for a cluster with its permissions, and for a role at grant time.
CREATE TABLE access_visible (
    role_name    text NOT NULL,
    cluster_name text NOT NULL,
    api_group    text NOT NULL,
    kind         text NOT NULL,
    namespace    text NOT NULL
);
CREATE INDEX access_visible_by_role ON access_visible (role_name, api_group, kind, cluster_name, namespace);
CREATE INDEX access_visible_by_cluster ON access_visible (cluster_name);

-- The API group and kind of each native catalog table, for the tables whose rows name their
-- table (history), rewritten at start-up from the catalog.
CREATE TABLE access_tables (
    table_name text PRIMARY KEY,
    api_group  text NOT NULL,
    kind       text NOT NULL
);
