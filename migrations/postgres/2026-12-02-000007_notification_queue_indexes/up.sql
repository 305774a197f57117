-- The sender changes each row's status twice (claimed, then sent). With one
-- (status, next_attempt_at) index over every row ever stored, both changes
-- moved the row inside that ever-growing index. Partial indexes hold only the
-- rows still waiting and the rows being sent, so they stay small however many
-- sent rows the table keeps.
DROP INDEX notifications_due;
CREATE INDEX notifications_pending ON notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_sending ON notifications (claimed_until) WHERE status = 'sending';
