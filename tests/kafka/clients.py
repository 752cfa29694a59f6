#!/usr/bin/env python3
"""Real Kafka clients driven by the test suite (tests/tests/kafka.rs).

Each subcommand prints one JSON object on stdout; the Rust test checks it.
  confluent-produce BOOTSTRAP TOPIC N [START]   idempotent, acks=all, zstd, 200-byte
                                        values numbered from START
  confluent-read BOOTSTRAP TOPIC N      assign every partition from the start, read N
  confluent-commit BOOTSTRAP TOPIC N GROUP   assign from the group's committed offsets (or
                                        the start), read N, commit synchronously
  commit-offset BOOTSTRAP TOPIC GROUP PARTITION OFFSET   one synchronous commit
  group-consume BOOTSTRAP TOPIC GROUP WORKDIR NAME IDLE_S [PROTOCOL]   subscribe() in a
                                        group of PROTOCOL: classic (default) or consumer
                                        (KIP-848)
  produce-paced BOOTSTRAP TOPIC N PER_S PROGRESS   paced idempotent producer, progress file
  kafka-python BOOTSTRAP TOPIC GROUP    kafka-python admin, producer and consumer group
  bench-produce BOOTSTRAP TOPIC SECS    (benchmark) acks=all zstd producer, linger 5 ms
  kafka-python-delete BOOTSTRAP TOPIC   kafka-python admin delete
  admin-create BOOTSTRAP TOPIC PARTITIONS    AdminClient.create_topics
  admin-delete BOOTSTRAP TOPIC               AdminClient.delete_topics
  admin-describe BOOTSTRAP TOPIC GROUP       AdminClient list/describe groups, configs, cluster
  admin-delete-group BOOTSTRAP GROUP         AdminClient.delete_consumer_groups
  admin-grow BOOTSTRAP TOPIC PARTITIONS      AdminClient.create_partitions
  ssl-roundtrip BOOTSTRAP TOPIC CERTDIR NAME N   over SSL (CA CERTDIR/ca.pem, client
                                        certificate CERTDIR/NAME.pem, or none when NAME is
                                        -): produce N records, read them back
  sasl-roundtrip BOOTSTRAP TOPIC CA MECHANISM USER PASSWORD N   the same over SASL_SSL
  acl-admin BOOTSTRAP CERTDIR NAME PRINCIPAL TOPIC   AdminClient (certificate NAME):
                                        create_acls (WRITE on TOPIC for PRINCIPAL), then
                                        describe_acls
"""
import json
import sys
import time


def confluent_produce(bootstrap, topic, n, start=0):
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

    for i in range(start, start + n):
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


def confluent_commit(bootstrap, topic, n, group):
    from confluent_kafka import OFFSET_STORED, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, OFFSET_STORED) for p in md.topics[topic].partitions])
    values, errors = [], []
    deadline = time.time() + 60
    while len(values) < n and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            errors.append(str(m.error()))
            continue
        values.append(m.value().decode())
    committed = c.commit(asynchronous=False)
    commit_errors = [str(tp.error) for tp in committed if tp.error]
    # Nothing more is there: a short poll must return nothing.
    extra = 0
    end = time.time() + 2
    while time.time() < end:
        m = c.poll(0.5)
        if m is not None and not m.error():
            extra += 1
    c.close()
    print(json.dumps({"read": len(values), "values": sorted(values), "extra": extra,
                      "errors": errors[:5], "commit_errors": commit_errors}))


def commit_offset(bootstrap, topic, group, partition, offset):
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    errors = []
    try:
        done = c.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=False)
        errors = [str(tp.error) for tp in done if tp.error]
    except KafkaException as e:
        errors.append(str(e))
    c.close()
    print(json.dumps({"errors": errors}))


def commit(c):
    """A synchronous commit; one refused while the group rebalances or its coordinator
    moves is retried once, then left to the next commit."""
    from confluent_kafka import KafkaException

    for _ in range(2):
        try:
            c.commit(asynchronous=False)
            return
        except KafkaException as e:
            print(f"commit: {e}", file=sys.stderr)
            time.sleep(0.5)


def bench_produce(bootstrap, topic, secs):
    """Benchmark (scripts/bench-kafka.sh, not a test): an idempotent acks=all zstd producer
    with linger 5 ms sends 200-byte records as fast as it can for SECS seconds; prints
    records/s acknowledged."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                  "compression.type": "zstd", "linger.ms": 5,
                  "queue.buffering.max.messages": 1000000})
    acked = [0]
    errors = []

    def done(err, msg):
        if err:
            errors.append(str(err))
        else:
            acked[0] += 1

    value = b"x" * 200
    start = time.time()
    while time.time() - start < secs:
        for _ in range(1000):
            try:
                p.produce(topic, value=value, on_delivery=done)
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(60)
    elapsed = time.time() - start
    print(json.dumps({"mode": "produce", "records": acked[0], "seconds": elapsed,
                      "records_per_sec": acked[0] / elapsed, "errors": errors[:5]}))


def group_consume(bootstrap, topic, group, workdir, name, idle_s, protocol="classic"):
    """subscribe() in a PROTOCOL group; prints the values read and the distinct
    `host|path` header pairs seen; writes its assignment to WORKDIR/NAME.assign on each
    change; reads until nothing new came for IDLE_S seconds after the first record (or
    90 s; IDLE_S < 0: until WORKDIR/NAME.stop is reached), commits synchronously, leaves,
    prints what it read."""
    import os
    from confluent_kafka import Consumer

    # What the member holds: eager (classic) rebalances revoke and assign everything,
    # incremental ones (KIP-848) only what changes; both are tracked the same way.
    owned = set()

    def write_assignment(added, revoked, event=None, consumer=None):
        owned.difference_update(p.partition for p in revoked)
        owned.update(p.partition for p in added)
        path = os.path.join(workdir, name + ".assign")
        with open(path + ".tmp", "w") as f:
            json.dump(sorted(owned), f)
        os.replace(path + ".tmp", path)
        # Every rebalance event, with the member id then, one JSON line each.
        if event is not None:
            with open(os.path.join(workdir, name + ".events"), "a") as f:
                f.write(json.dumps({"event": event, "member": consumer.memberid(),
                                    "partitions": sorted(p.partition for p in added + revoked),
                                    "at": round(time.time(), 3)}) + "\n")

    conf = {"bootstrap.servers": bootstrap, "group.id": group, "client.id": name,
            "group.protocol": protocol, "enable.auto.commit": False,
            "auto.offset.reset": "earliest"}
    if os.environ.get("TRIB_KAFKA_DEBUG"):
        conf["debug"] = os.environ["TRIB_KAFKA_DEBUG"]
    if protocol == "classic":
        # With KIP-848 the coordinator sets session and heartbeat timing.
        conf.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    c = Consumer(conf)
    c.subscribe([topic], on_assign=lambda c, parts: write_assignment(parts, [], "assign", c),
                on_revoke=lambda c, parts: write_assignment([], parts, "revoke", c),
                on_lost=lambda c, parts: write_assignment([], parts, "lost", c))
    values, errors, sources = [], [], set()
    start = time.time()
    last = None
    dirty = False
    # Stalls longer than 2 s: (seconds since start, length, records read before it).
    gaps = []
    # IDLE_S < 0: read until WORKDIR/NAME.stop names how many distinct values to reach
    # (then at most 60 s more), however long failovers pause the stream.
    stop_path = os.path.join(workdir, name + ".stop")
    until_stop = idle_s < 0
    stop_seen = None
    while time.time() - start < (240 if until_stop else 90):
        if until_stop and stop_seen is None and os.path.exists(stop_path):
            with open(stop_path) as f:
                target = int(f.read().strip() or 0)
            stop_seen = time.time()
        if stop_seen is not None and (len(set(values)) >= target
                                      or time.time() - stop_seen > 60):
            break
        m = c.poll(0.5)
        if m is None:
            if last is None:
                continue
            # Commit once things are quiet (1 s), well before leaving (IDLE_S): a
            # member's leave starts a rebalance, and a classic group refuses commits
            # during one.
            if dirty and time.time() - last > 1:
                commit(c)
                dirty = False
            if not until_stop and time.time() - last > idle_s:
                break
            continue
        if m.error():
            errors.append(str(m.error()))
            continue
        if last is not None and time.time() - last > 2:
            gaps.append([round(last - start, 1), round(time.time() - last, 1), len(values)])
        values.append(m.value().decode())
        headers = dict(m.headers() or [])
        sources.add(f"{headers.get('host', b'').decode()}|{headers.get('path', b'').decode()}")
        last = time.time()
        dirty = True
        if len(values) % 500 == 0:
            commit(c)
    if dirty:
        commit(c)
    c.close()
    if last is not None and time.time() - last > 2:
        gaps.append([round(last - start, 1), round(time.time() - last, 1), len(values)])
    print(json.dumps({"values": values, "errors": errors[:5], "sources": sorted(sources),
                      "gaps": gaps}))


def produce_paced(bootstrap, topic, n, per_s, progress):
    """Idempotent acks=all producer of N records at PER_S records/s; writes the count
    acknowledged so far to PROGRESS; prints the acknowledged values in delivery order."""
    import os
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5, "message.timeout.ms": 120000})
    acked, errors = [], []

    def done(err, msg):
        if err:
            errors.append(str(err))
        else:
            acked.append(msg.value().decode())

    def report():
        with open(progress + ".tmp", "w") as f:
            f.write(str(len(acked)))
        os.replace(progress + ".tmp", progress)

    start = time.time()
    last_write = 0
    for i in range(n):
        while time.time() < start + i / per_s:
            p.poll(0.005)
        p.produce(topic, value=f"fo-{i:08d}".encode(), on_delivery=done)
        p.poll(0)
        if time.time() - last_write > 0.1:
            report()
            last_write = time.time()
    deadline = time.time() + 150
    left = len(p)
    while left and time.time() < deadline:
        left = p.flush(0.2)
        report()
    print(json.dumps({"acked": acked, "errors": errors[:5], "error_count": len(errors),
                      "unflushed": left}))


def kafka_python(bootstrap, topic, group):
    """kafka-python: admin create, producer (acks=all), a consumer group (subscribe) that
    reads everything and commits, admin delete."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic

    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    created = topic in a.list_topics()
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(300):
        p.send(topic, f"kp-{i}".encode(), headers=[("origin", b"kafka-python")])
    p.flush()
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                      auto_offset_reset="earliest", enable_auto_commit=False,
                      consumer_timeout_ms=8000)
    values = [m.value.decode() for m in c]
    c.commit()
    c.close()
    print(json.dumps({"created": created, "values": values}))


def kafka_python_delete(bootstrap, topic):
    from kafka import KafkaAdminClient

    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    a.delete_topics([topic])
    print(json.dumps({"listed": topic in a.list_topics()}))


def admin_describe(bootstrap, topic, group):
    """AdminClient views: groups listed, one group described, a topic's configs, the
    cluster."""
    from confluent_kafka import ConsumerGroupTopicPartitions  # noqa: F401 (API present)
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    a = AdminClient({"bootstrap.servers": bootstrap})
    listed = a.list_consumer_groups(request_timeout=10).result()
    groups = sorted(g.group_id for g in listed.valid)
    desc = a.describe_consumer_groups([group], request_timeout=10)[group].result()
    members = sorted(len(m.assignment.topic_partitions) for m in desc.members)
    res = ConfigResource(ResourceType.TOPIC, topic)
    configs = a.describe_configs([res])[res].result()
    cluster = a.describe_cluster(request_timeout=10).result()
    print(json.dumps({"groups": groups, "state": str(desc.state), "members": members,
                      "type": str(getattr(desc, "type", "")),
                      "protocol": desc.partition_assignor,
                      "retention_ms": configs["retention.ms"].value,
                      "brokers": len(cluster.nodes)}))


def admin_delete_group(bootstrap, group):
    from confluent_kafka.admin import AdminClient

    a = AdminClient({"bootstrap.servers": bootstrap})
    errors = []
    for f in a.delete_consumer_groups([group], request_timeout=10).values():
        try:
            f.result()
        except Exception as e:
            errors.append(str(e))
    print(json.dumps({"errors": errors}))


def admin_grow(bootstrap, topic, partitions):
    from confluent_kafka.admin import AdminClient, NewPartitions

    a = AdminClient({"bootstrap.servers": bootstrap})
    errors = []
    for f in a.create_partitions([NewPartitions(topic, partitions)]).values():
        try:
            f.result(timeout=30)
        except Exception as e:
            errors.append(str(e))
    print(json.dumps({"errors": errors}))


def admin_create(bootstrap, topic, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic

    a = AdminClient({"bootstrap.servers": bootstrap})
    futures = a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    errors = []
    for f in futures.values():
        try:
            f.result(timeout=30)
        except Exception as e:  # the test prints what failed
            errors.append(str(e))
    print(json.dumps({"errors": errors}))


def admin_delete(bootstrap, topic):
    from confluent_kafka.admin import AdminClient

    a = AdminClient({"bootstrap.servers": bootstrap})
    errors = []
    for f in a.delete_topics([topic]).values():
        try:
            f.result(timeout=30)
        except Exception as e:
            errors.append(str(e))
    print(json.dumps({"errors": errors}))


def sasl_roundtrip(bootstrap, topic, ca, mechanism, user, password, n):
    """ssl_roundtrip, authenticated by SASL (PLAIN or SCRAM) over TLS."""
    conf = {"bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL",
            "ssl.ca.location": ca, "sasl.mechanism": mechanism,
            "sasl.username": user, "sasl.password": password, "socket.timeout.ms": 5000}
    roundtrip(conf, topic, n)


def acl_admin(bootstrap, certdir, name, principal, topic):
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                       AclPermissionType, AdminClient, ResourcePatternType,
                                       ResourceType)

    a = AdminClient({"bootstrap.servers": bootstrap, "security.protocol": "SSL",
                     "ssl.ca.location": f"{certdir}/ca.pem",
                     "ssl.certificate.location": f"{certdir}/{name}.pem",
                     "ssl.key.location": f"{certdir}/{name}-key.pem"})
    errors = []
    binding = AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, principal, "*",
                         AclOperation.WRITE, AclPermissionType.ALLOW)
    for f in a.create_acls([binding]).values():
        try:
            f.result(timeout=30)
        except Exception as e:
            errors.append(str(e))
    found = []
    flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                           AclOperation.ANY, AclPermissionType.ANY)
    try:
        for b in a.describe_acls(flt).result(timeout=30):
            found.append([str(b.restype), b.name, b.principal, str(b.operation),
                          str(b.permission_type)])
    except Exception as e:
        errors.append(str(e))
    print(json.dumps({"errors": errors, "acls": found}))


def ssl_roundtrip(bootstrap, topic, certdir, name, n):
    """librdkafka over SSL: an idempotent producer of N records, then a consumer reading
    them back; prints what was delivered and read, and the errors seen."""
    conf = {"bootstrap.servers": bootstrap, "security.protocol": "SSL",
            "ssl.ca.location": f"{certdir}/ca.pem", "socket.timeout.ms": 5000}
    if name != "-":
        conf.update({"ssl.certificate.location": f"{certdir}/{name}.pem",
                     "ssl.key.location": f"{certdir}/{name}-key.pem"})
    roundtrip(conf, topic, n)


def roundtrip(conf, topic, n):
    from confluent_kafka import Consumer, Producer

    errors = []

    def on_error(e):
        errors.append(str(e))

    p = Producer(dict(conf, **{"enable.idempotence": True, "acks": "all",
                               "message.timeout.ms": 8000, "error_cb": on_error}))
    delivered = []
    for i in range(n):
        p.produce(topic, value=f"ssl-{i}".encode(),
                  on_delivery=lambda err, m: delivered.append(m.value().decode())
                  if err is None else errors.append(str(err)))
    p.flush(10)
    read = []
    if delivered:
        c = Consumer(dict(conf, **{"group.id": "ssl-roundtrip", "auto.offset.reset": "earliest",
                                   "error_cb": on_error}))
        c.subscribe([topic])
        deadline = time.time() + 30
        while len(read) < len(delivered) and time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                read.append(m.value().decode())
        c.close()
    print(json.dumps({"delivered": delivered, "read": read, "errors": errors[:5]}))


if __name__ == "__main__":
    cmd, bootstrap, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    if cmd == "confluent-produce":
        confluent_produce(bootstrap, topic, int(sys.argv[4]),
                          int(sys.argv[5]) if len(sys.argv) > 5 else 0)
    elif cmd == "confluent-read":
        confluent_read(bootstrap, topic, int(sys.argv[4]))
    elif cmd == "confluent-commit":
        confluent_commit(bootstrap, topic, int(sys.argv[4]), sys.argv[5])
    elif cmd == "kafka-python":
        kafka_python(bootstrap, topic, sys.argv[4])
    elif cmd == "kafka-python-delete":
        kafka_python_delete(bootstrap, topic)
    elif cmd == "produce-paced":
        produce_paced(bootstrap, topic, int(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
    elif cmd == "bench-produce":
        bench_produce(bootstrap, topic, float(sys.argv[4]))
    elif cmd == "group-consume":
        group_consume(bootstrap, topic, sys.argv[4], sys.argv[5], sys.argv[6], float(sys.argv[7]),
                      sys.argv[8] if len(sys.argv) > 8 else "classic")
    elif cmd == "commit-offset":
        commit_offset(bootstrap, topic, sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    elif cmd == "admin-describe":
        admin_describe(bootstrap, topic, sys.argv[4])
    elif cmd == "admin-delete-group":
        admin_delete_group(bootstrap, topic)
    elif cmd == "admin-grow":
        admin_grow(bootstrap, topic, int(sys.argv[4]))
    elif cmd == "admin-create":
        admin_create(bootstrap, topic, int(sys.argv[4]))
    elif cmd == "admin-delete":
        admin_delete(bootstrap, topic)
    elif cmd == "sasl-roundtrip":
        sasl_roundtrip(bootstrap, topic, sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7],
                       int(sys.argv[8]))
    elif cmd == "acl-admin":
        acl_admin(bootstrap, topic, sys.argv[4], sys.argv[5], sys.argv[6])
    elif cmd == "ssl-roundtrip":
        ssl_roundtrip(bootstrap, topic, sys.argv[4], sys.argv[5], int(sys.argv[6]))
    else:
        sys.exit(f"unknown command {cmd}")
