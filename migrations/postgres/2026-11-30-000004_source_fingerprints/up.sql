-- A fingerprint (key, payload, timestamp) of the record each row came from:
-- a redelivery has the same one, a record at a reused position (a topic
-- deleted and recreated) another. Rows stored before have none (NULL, and 0
-- in dead_letters), which counts as the same.
ALTER TABLE price_events ADD COLUMN source_fingerprint BIGINT;
ALTER TABLE notifications ADD COLUMN source_fingerprint BIGINT;
ALTER TABLE dead_letters ADD COLUMN fingerprint BIGINT NOT NULL DEFAULT 0;
-- Two records at one reused position may both be dead-lettered.
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_topic_partition_offset_key;
ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_source_key UNIQUE (topic, "partition", "offset", fingerprint);
