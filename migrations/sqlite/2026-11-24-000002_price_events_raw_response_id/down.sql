ALTER TABLE price_events DROP COLUMN raw_response_id;
