-- Timestamps are UTC (TIMESTAMP WITHOUT TIME ZONE, written by the service in UTC).
CREATE TABLE notifications (
    id BIGSERIAL PRIMARY KEY,
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
    UNIQUE (source_topic, source_partition, source_offset)
);
CREATE INDEX notifications_due ON notifications (status, next_attempt_at);

CREATE TABLE dead_letters (
    id BIGSERIAL PRIMARY KEY,
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset" BIGINT NOT NULL,
    "key" BYTEA,
    payload BYTEA,
    error TEXT NOT NULL,
    failed_at TIMESTAMP NOT NULL,
    replayed_at TIMESTAMP,
    UNIQUE (topic, "partition", "offset")
);

CREATE TABLE job_runs (
    id BIGSERIAL PRIMARY KEY,
    job TEXT NOT NULL,
    holder TEXT NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    outcome TEXT NOT NULL,
    error TEXT,
    details TEXT
);
CREATE INDEX job_runs_job_started ON job_runs (job, started_at);

CREATE TABLE job_leases (
    job TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    lease_until TIMESTAMP NOT NULL
);

CREATE TABLE price_events (
    id BIGSERIAL PRIMARY KEY,
    symbol TEXT NOT NULL,
    price DOUBLE PRECISION NOT NULL,
    "timestamp" TIMESTAMP NOT NULL,
    source TEXT NOT NULL,
    source_topic TEXT NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset BIGINT NOT NULL,
    UNIQUE (source_topic, source_partition, source_offset)
);
