-- A sender claims rows without writing them: a session advisory lock per row
-- on PostgreSQL, the job's lease and the run's memory on SQLite. A row is
-- written once after its insert, when its delivery ends. Rows an older
-- version left being sent are pending again (their claim dies with it).
UPDATE notifications SET status = 'pending' WHERE status = 'sending';
DROP INDEX notifications_sending;
ALTER TABLE notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_status_check CHECK (status IN ('pending', 'sent', 'failed'));
ALTER TABLE notifications DROP COLUMN claimed_until;
ALTER TABLE notifications DROP COLUMN claimed_by;
