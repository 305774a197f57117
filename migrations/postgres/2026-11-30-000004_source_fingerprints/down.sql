DELETE FROM dead_letters a USING dead_letters b
    WHERE a.topic = b.topic AND a."partition" = b."partition" AND a."offset" = b."offset" AND a.id > b.id;
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_source_key;
ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_topic_partition_offset_key UNIQUE (topic, "partition", "offset");
ALTER TABLE dead_letters DROP COLUMN fingerprint;
ALTER TABLE notifications DROP COLUMN source_fingerprint;
ALTER TABLE price_events DROP COLUMN source_fingerprint;
