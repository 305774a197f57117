DROP INDEX notifications_sending;
DROP INDEX notifications_pending;
CREATE INDEX notifications_due ON notifications (status, next_attempt_at);
