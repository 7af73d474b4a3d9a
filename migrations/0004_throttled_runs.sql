-- How often the cluster's API throttled each run (429, or 503 with Retry-After): every such
-- answer was waited out and its request sent again within the run (shared/src/source/cluster_api.rs).
-- A constant default: the column is added without rewriting the table.
ALTER TABLE runs ADD COLUMN throttled integer NOT NULL DEFAULT 0;
