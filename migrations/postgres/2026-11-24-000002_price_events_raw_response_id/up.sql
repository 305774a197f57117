-- The market-data producer's raw answer a price came from (a UUID or a number, as text).
ALTER TABLE price_events ADD COLUMN raw_response_id TEXT;
