DROP TABLE paused_partitions;
