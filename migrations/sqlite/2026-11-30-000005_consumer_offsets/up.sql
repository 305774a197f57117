-- The truth of what each consumer group has applied: the next offset to
-- read, written in the same transaction as the handlers' writes, and the
-- fingerprint of the record before it (to tell a redelivery from a log that
-- changed under the offset: a topic deleted and recreated).
CREATE TABLE consumer_offsets (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    last_fingerprint BIGINT NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (group_id, topic, "partition")
);

-- Per-symbol statistics of the price-events module: updated by increments,
-- so correct only if each event is applied exactly once.
CREATE TABLE price_stats (
    symbol TEXT PRIMARY KEY,
    events BIGINT NOT NULL,
    last_price DOUBLE NOT NULL,
    min_price DOUBLE NOT NULL,
    max_price DOUBLE NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
