-- The fleet explorer (`scheduler explore`, scheduler/src/explore/) maps each request's user to a
-- role through `access_identities` before it `SET LOCAL ROLE`s to it, as its own login role, a
-- member of `kubecensus_explorer`: that group may read the mapping (nothing else of it). Where
-- access control is off (the role is missing, migration 0008), there is nothing to grant.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'kubecensus_explorer') THEN
    GRANT SELECT ON access_identities TO kubecensus_explorer;
  END IF;
END
$$;
