DROP TABLE price_stats;
DROP TABLE consumer_offsets;
