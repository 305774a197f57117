-- A fingerprint (key, payload, timestamp) of the record each row came from:
-- a redelivery has the same one, a record at a reused position (a topic
-- deleted and recreated) another. Rows stored before have none (NULL, and 0
-- in dead_letters), which counts as the same.
ALTER TABLE price_events ADD COLUMN source_fingerprint BIGINT;
ALTER TABLE notifications ADD COLUMN source_fingerprint BIGINT;
-- Two records at one reused position may both be dead-lettered. SQLite
-- cannot drop a table's UNIQUE constraint, so the table is rebuilt.
CREATE TABLE dead_letters_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset" BIGINT NOT NULL,
    "key" BLOB,
    payload BLOB,
    error TEXT NOT NULL,
    failed_at TIMESTAMP NOT NULL,
    replayed_at TIMESTAMP,
    fingerprint BIGINT NOT NULL DEFAULT 0,
    UNIQUE (topic, "partition", "offset", fingerprint)
);
INSERT INTO dead_letters_new (id, topic, "partition", "offset", "key", payload, error, failed_at, replayed_at)
    SELECT id, topic, "partition", "offset", "key", payload, error, failed_at, replayed_at FROM dead_letters;
DROP TABLE dead_letters;
ALTER TABLE dead_letters_new RENAME TO dead_letters;
