CREATE TABLE dead_letters_old (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset" BIGINT NOT NULL,
    "key" BLOB,
    payload BLOB,
    error TEXT NOT NULL,
    failed_at TIMESTAMP NOT NULL,
    replayed_at TIMESTAMP,
    UNIQUE (topic, "partition", "offset")
);
INSERT OR IGNORE INTO dead_letters_old (id, topic, "partition", "offset", "key", payload, error, failed_at, replayed_at)
    SELECT id, topic, "partition", "offset", "key", payload, error, failed_at, replayed_at FROM dead_letters ORDER BY id;
DROP TABLE dead_letters;
ALTER TABLE dead_letters_old RENAME TO dead_letters;
ALTER TABLE notifications DROP COLUMN source_fingerprint;
ALTER TABLE price_events DROP COLUMN source_fingerprint;
