ALTER TABLE consumer_offsets DROP COLUMN topic_id;
ALTER TABLE dead_letters DROP COLUMN replaying_until;
