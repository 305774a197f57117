-- Partitions an operator paused from the console: the consumer keeps them
-- paused across rebalances and restarts until they are resumed.
CREATE TABLE paused_partitions (
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    paused_at TIMESTAMP NOT NULL,
    PRIMARY KEY (topic, "partition")
);
