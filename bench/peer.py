"""The benchmark's Python peer: a careful consumer of the notifications job.

confluent-kafka's consume(n), one executemany into SQLite per batch in one
transaction, then a synchronous offset commit. With `job`, it also does the
rest of the job, as a careful service would: after each batch it delivers
what is pending, in chunks of 200, through a log line the log level filters
out, and marks each chunk sent with one UPDATE; it ends when every record is
sent. Prints one JSON line: records/s from the first record, and CPU
seconds of the whole run (every thread of the process), like the Rust
figures beside it.

    python peer.py BROKERS TOPIC GROUP SQLITE_PATH RECORDS BATCH [job]
"""
import logging
import json
import sqlite3
import sys
import time

from confluent_kafka import Consumer


def main():
    brokers, topic, group, path, records, batch = sys.argv[1:7]
    records, batch = int(records), int(batch)
    job = sys.argv[7:8] == ["job"]
    logging.basicConfig(level=logging.WARNING)
    log = logging.getLogger("notifications")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS notifications (source_topic TEXT, source_partition INTEGER,"
        " source_offset INTEGER, users TEXT, event TEXT, message TEXT, created_at TEXT,"
        " status TEXT NOT NULL DEFAULT 'pending',"
        " UNIQUE (source_topic, source_partition, source_offset))"
    )
    db.execute("CREATE INDEX IF NOT EXISTS notifications_status ON notifications (status)")
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    seen, sent, started = 0, 0, None
    while seen < records or (job and sent < records):
        messages = consumer.consume(batch, timeout=5.0) if seen < records else []
        if not messages and seen < records:
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
        db.executemany(
            "INSERT OR IGNORE INTO notifications"
            " (source_topic, source_partition, source_offset, users, event, message, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.execute("COMMIT")
        if messages:
            consumer.commit(asynchronous=False)
        seen += len(messages)
        if job:
            sent += deliver(db, log)
    elapsed = time.monotonic() - started
    print(json.dumps({"records_per_s": seen / elapsed, "cpu_s": time.process_time(), "records": seen}))
    consumer.close()


def deliver(db, log):
    """Delivers every pending row, a chunk at a time; returns how many."""
    done = 0
    while True:
        chunk = db.execute(
            "SELECT rowid, users, event, message FROM notifications WHERE status = 'pending' ORDER BY rowid LIMIT 200"
        ).fetchall()
        if not chunk:
            return done
        for rowid, users, event, message in chunk:
            log.info("notification id=%s users=%s event=%s message=%s", rowid, users, event, message)
        db.execute("BEGIN")
        db.executemany("UPDATE notifications SET status = 'sent' WHERE rowid = ?", [(r[0],) for r in chunk])
        db.execute("COMMIT")
        done += len(chunk)


if __name__ == "__main__":
    main()
