"""The benchmark's Python peer for the predictions job: what the original
crypto prediction pipeline did, done carefully.

confluent-kafka's consume(n); one POST of the batch to the model server
(`{"model", "instances"}` → `{"predictions"}`, urllib, a kept-alive
connection); the predictions inserted with one executemany into SQLite in
one transaction; then a synchronous offset commit. Prints one JSON line:
records/s from the first record, and the process's CPU seconds.

    python predict_peer.py BROKERS TOPIC GROUP SQLITE_PATH MODEL_URL RECORDS BATCH
"""
import http.client
import json
import sqlite3
import sys
import time
import urllib.parse

from confluent_kafka import Consumer


def main():
    brokers, topic, group, path, url, records, batch = sys.argv[1:8]
    records, batch = int(records), int(batch)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS predictions (source_topic TEXT, source_partition INTEGER,"
        " source_offset INTEGER, key TEXT, input TEXT, prediction TEXT, latency_ms INTEGER, created_at TEXT,"
        " UNIQUE (source_topic, source_partition, source_offset))"
    )
    target = urllib.parse.urlparse(url)
    model = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    seen, started = 0, None
    while seen < records:
        messages = [m for m in consumer.consume(batch, timeout=5.0) if not m.error()]
        if not messages:
            continue
        if started is None:
            started = time.monotonic()
        instances = [json.loads(m.value()) for m in messages]
        body = json.dumps({"model": "m", "instances": instances})
        t0 = time.monotonic()
        model.request("POST", target.path, body, {"Content-Type": "application/json"})
        answer = json.loads(model.getresponse().read())
        latency_ms = int((time.monotonic() - t0) * 1000)
        now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        rows = [
            (m.topic(), m.partition(), m.offset(), i.get("symbol"), json.dumps(i), json.dumps(p), latency_ms, now)
            for m, i, p in zip(messages, instances, answer["predictions"])
        ]
        db.execute("BEGIN")
        db.executemany("INSERT OR IGNORE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")
        consumer.commit(asynchronous=False)
        seen += len(messages)
    elapsed = time.monotonic() - started
    print(json.dumps({"records_per_s": seen / elapsed, "cpu_s": time.process_time(), "records": seen}))
    consumer.close()


if __name__ == "__main__":
    main()
