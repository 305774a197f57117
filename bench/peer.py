"""The benchmark's Python peer: a careful consumer of the notifications job.

confluent-kafka's consume(n), one executemany into SQLite per batch in one
transaction, then a synchronous offset commit. Prints one JSON line:
records/s from the first record, and CPU seconds of the whole run (every
thread of the process), like the Rust figures beside it.

    python peer.py BROKERS TOPIC GROUP SQLITE_PATH RECORDS BATCH
"""
import json
import sqlite3
import sys
import time

from confluent_kafka import Consumer


def main():
    brokers, topic, group, path, records, batch = sys.argv[1:7]
    records, batch = int(records), int(batch)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS notifications (source_topic TEXT, source_partition INTEGER,"
        " source_offset INTEGER, users TEXT, event TEXT, message TEXT, created_at TEXT,"
        " UNIQUE (source_topic, source_partition, source_offset))"
    )
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    seen, started = 0, None
    while seen < records:
        messages = consumer.consume(batch, timeout=5.0)
        if not messages:
            continue
        if started is None:
            started = time.monotonic()
        now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        rows = []
        for m in messages:
            if m.error():
                continue
            try:
                p = json.loads(m.value())
                rows.append((m.topic(), m.partition(), m.offset(), json.dumps([p["user_id"]]), p["event"], p["content"], now))
            except (ValueError, KeyError, TypeError):
                continue  # a real consumer would dead-letter it
        db.execute("BEGIN")
        db.executemany("INSERT OR IGNORE INTO notifications VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")
        consumer.commit(asynchronous=False)
        seen += len(messages)
    elapsed = time.monotonic() - started
    print(json.dumps({"records_per_s": seen / elapsed, "cpu_s": time.process_time(), "records": seen}))
    consumer.close()


if __name__ == "__main__":
    main()
