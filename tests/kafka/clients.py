#!/usr/bin/env python3
"""Real Kafka clients driven by the test suite (tests/tests/kafka.rs).

Each subcommand prints one JSON object on stdout; the Rust test checks it.
  confluent-produce BOOTSTRAP TOPIC N   idempotent, acks=all, zstd, 200-byte values
  confluent-read BOOTSTRAP TOPIC N      assign every partition from the start, read N
"""
import json
import sys
import time


def confluent_produce(bootstrap, topic, n):
    from confluent_kafka import Producer

    p = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "zstd",
        "linger.ms": 5,
    })
    delivered, errors = [], []

    def done(err, msg):
        if err:
            errors.append(str(err))
        else:
            delivered.append((msg.partition(), msg.offset()))

    for i in range(n):
        value = f"record-{i:08d}-".encode() + b"x" * 184
        p.produce(topic, value=value, key=f"k{i % 13}".encode(),
                  headers={"host": b"kafka-test"}, on_delivery=done)
        if i % 1000 == 0:
            p.poll(0)
    left = p.flush(60)
    print(json.dumps({"delivered": len(delivered), "errors": errors[:5],
                      "error_count": len(errors), "unflushed": left,
                      "distinct_offsets": len(set(delivered))}))


def confluent_read(bootstrap, topic, n):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
    values, last, out_of_order, errors = [], {}, 0, []
    deadline = time.time() + 60
    while len(values) < n and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            errors.append(str(m.error()))
            continue
        if m.offset() <= last.get(m.partition(), -1):
            out_of_order += 1
        last[m.partition()] = m.offset()
        headers = dict(m.headers() or [])
        values.append((m.value().decode(), headers.get("host", b"").decode()))
    c.close()
    print(json.dumps({"read": len(values), "distinct": len(set(v for v, _ in values)),
                      "hosts": sorted(set(h for _, h in values)),
                      "out_of_order": out_of_order, "errors": errors[:5]}))


if __name__ == "__main__":
    cmd, bootstrap, topic, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    {"confluent-produce": confluent_produce, "confluent-read": confluent_read}[cmd](bootstrap, topic, n)
