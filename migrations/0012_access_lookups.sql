-- What each role sees, ready for the policies to read with one index probe a lookup
-- (shared/src/store/access/lookups.rs): one row per (role, `<api group>/<Kind>`) it is shown
-- somewhere, and one per role with `kind` = '' for what holds of every kind. Each column is a
-- `jsonb` object probed by key with `?`. Rebuilt from `access_visible_namespaces` for a role in
-- the transaction that changes its rows there, under that role's advisory lock; filled for every
-- role at start-up when missing (so this migration leaves it empty). A viewer reads only its own
-- rows (policy `kubecensus_own`, created at start-up like that of `access_visible_namespaces`).
-- (A correction of 0011's header, which cannot change: its UPDATE rewrites the rows written
-- before it, so they go on showing what they showed; only rows of grants that show no kind are
-- deleted.)
CREATE TABLE access_lookups (
    role_name          text NOT NULL,
    kind               text NOT NULL,
    clusters           jsonb,
    namespaces         jsonb,
    places             jsonb,
    seen               jsonb,
    combinations       jsonb,
    table_combinations jsonb,
    PRIMARY KEY (role_name, kind)
);

-- The union of `jsonb` objects (`||` of each; NULLs skipped, NULL when all are), for the
-- lookups of a kind shown by several kind sets.
CREATE AGGREGATE jsonb_merge_agg(jsonb) (SFUNC = jsonb_concat, STYPE = jsonb);
