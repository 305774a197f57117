-- A dead letter being replayed is claimed until this time, so that two
-- replays of it at once produce it once (a replay that died frees it then).
ALTER TABLE dead_letters ADD COLUMN replaying_until TIMESTAMP;
-- The id of the topic whose log the stored offset belongs to: a topic
-- deleted and recreated while the service was stopped has a new id, and its
-- partitions are read from the new log's beginning.
ALTER TABLE consumer_offsets ADD COLUMN topic_id TEXT;
