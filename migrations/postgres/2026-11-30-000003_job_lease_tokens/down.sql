ALTER TABLE job_leases DROP COLUMN token;
