-- How many deliveries of its job message a run stands for: 1, except for the one `handed_back`
-- run that records every hand-back of a job whose cluster the worker did not know
-- (worker/src/poll.rs), so such a job writes one row however often it comes back. Attempts
-- are counted as deliveries less these (shared/src/store/runs.rs).
ALTER TABLE runs ADD COLUMN deliveries integer NOT NULL DEFAULT 1;
