CREATE TABLE notifications_v1 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_topic TEXT,
    source_partition INTEGER,
    source_offset BIGINT,
    users TEXT NOT NULL,
    event TEXT NOT NULL,
    message TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    claimed_until TIMESTAMP,
    claimed_by TEXT,
    sent_at TIMESTAMP,
    source_fingerprint BIGINT,
    UNIQUE (source_topic, source_partition, source_offset)
);
INSERT INTO notifications_v1 (id, source_topic, source_partition, source_offset, users, event, message, status,
    attempts, last_error, created_at, next_attempt_at, sent_at, source_fingerprint)
SELECT id, source_topic, source_partition, source_offset, users, event, message, status,
    attempts, last_error, created_at, next_attempt_at, sent_at, source_fingerprint
FROM notifications;
DROP TABLE notifications;
ALTER TABLE notifications_v1 RENAME TO notifications;
CREATE INDEX notifications_pending ON notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_sending ON notifications (claimed_until) WHERE status = 'sending';
