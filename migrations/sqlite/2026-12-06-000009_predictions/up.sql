-- One prediction per record of the predictions module's topic, written in
-- the batch's transaction with its offsets: stored once per source position.
CREATE TABLE predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_topic TEXT NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset BIGINT NOT NULL,
    source_fingerprint BIGINT,
    "key" TEXT,
    model TEXT NOT NULL,
    model_version TEXT,
    input TEXT NOT NULL,
    prediction TEXT NOT NULL,
    latency_ms BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (source_topic, source_partition, source_offset)
);
CREATE INDEX predictions_key ON predictions ("key", id);
