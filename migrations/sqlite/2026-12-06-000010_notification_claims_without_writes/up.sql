-- A sender claims rows without writing them: the job's lease makes one
-- sender per database, and its claims live in the run's memory. A row is
-- written once after its insert, when its delivery ends. Rows an older
-- version left being sent are pending again. (SQLite changes a CHECK
-- constraint by rebuilding the table.)
CREATE TABLE notifications_v2 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_topic TEXT,
    source_partition INTEGER,
    source_offset BIGINT,
    users TEXT NOT NULL,
    event TEXT NOT NULL,
    message TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    sent_at TIMESTAMP,
    source_fingerprint BIGINT,
    UNIQUE (source_topic, source_partition, source_offset)
);
INSERT INTO notifications_v2 (id, source_topic, source_partition, source_offset, users, event, message, status,
    attempts, last_error, created_at, next_attempt_at, sent_at, source_fingerprint)
SELECT id, source_topic, source_partition, source_offset, users, event, message,
    CASE status WHEN 'sending' THEN 'pending' ELSE status END,
    attempts, last_error, created_at, next_attempt_at, sent_at, source_fingerprint
FROM notifications;
DROP TABLE notifications;
ALTER TABLE notifications_v2 RENAME TO notifications;
CREATE INDEX notifications_pending ON notifications (next_attempt_at) WHERE status = 'pending';
