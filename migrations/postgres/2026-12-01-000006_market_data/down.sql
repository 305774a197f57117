ALTER TABLE price_stats DROP COLUMN moving_average_window;
ALTER TABLE price_stats DROP COLUMN moving_average;
DROP INDEX price_events_symbol_id;
DROP INDEX price_events_raw_response;
DROP TABLE outbox;
DROP TABLE raw_responses;
