-- The market-data producer. Each fetch stores the provider's answer (or its
-- failure) and, when it held a price, the event to publish, in one transaction.
CREATE TABLE raw_responses (
    id TEXT PRIMARY KEY,            -- a UUID: the event's raw_response_id
    provider TEXT NOT NULL,
    symbol TEXT NOT NULL,
    http_status INTEGER,            -- NULL: no answer (timeout, connection refused)
    body TEXT,
    error TEXT,                     -- NULL: a price was read
    fetched_at TIMESTAMP NOT NULL
);
CREATE INDEX raw_responses_symbol_fetched ON raw_responses (symbol, fetched_at);

-- Events waiting to reach Kafka; the publisher marks each published from its
-- delivery report, oldest first and one per key at a time (order per key).
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    topic TEXT NOT NULL,
    "key" TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    published_at TIMESTAMP,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- An event's identity when it has one: a re-published event is stored once.
CREATE INDEX price_events_raw_response ON price_events (raw_response_id) WHERE raw_response_id IS NOT NULL;
-- The moving average reads a symbol's last prices in applying order.
CREATE INDEX price_events_symbol_id ON price_events (symbol, id);
ALTER TABLE price_stats ADD COLUMN moving_average DOUBLE PRECISION;
ALTER TABLE price_stats ADD COLUMN moving_average_window INTEGER;
