-- A fencing token: grows with each acquisition of a job's lease, so a run
-- that lost its lease cannot write as if it still held it.
ALTER TABLE job_leases ADD COLUMN token BIGINT NOT NULL DEFAULT 0;
