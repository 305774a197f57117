ALTER TABLE notifications ADD COLUMN claimed_until TIMESTAMP;
ALTER TABLE notifications ADD COLUMN claimed_by TEXT;
ALTER TABLE notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_status_check CHECK (status IN ('pending', 'sending', 'sent', 'failed'));
CREATE INDEX notifications_sending ON notifications (claimed_until) WHERE status = 'sending';
