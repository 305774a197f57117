DROP TABLE price_events;
DROP TABLE job_leases;
DROP TABLE job_runs;
DROP TABLE dead_letters;
DROP TABLE notifications;
