//! Security, end to end: TLS refusals (each writes nothing and leaves the node healthy),
//! plaintext exposure refused at start, certificate rotation by SIGHUP under load, and
//! Kafka's SSL listener with a real librdkafka client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tributary_tests::{
    Collector, binary, certs_init, client, client_tls, node_tls_yaml, python_client, read_topic,
    tls_client,
};

fn produce(
    c: &reqwest::blocking::Client,
    col: &Collector,
    value: &str,
) -> Result<u16, reqwest::Error> {
    c.post(col.url("/v1/topics/t/records"))
        .json(&json!({"records": [{"value": value}]}))
        .send()
        .map(|r| r.status().as_u16())
}

#[test]
fn tls_refusals_write_nothing_and_leave_the_node_healthy() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    let other = tmp.path().join("other");
    certs_init(&certs, 1, &["alice"]);
    certs_init(&other, 1, &["mallory"]);
    // A certificate from the right CA that expired yesterday.
    let out = Command::new(binary("collector"))
        .args(["certs", "issue", "--dir"])
        .arg(&certs)
        .args(["--name", "old", "--days", "-1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let col = Collector::start(
        &tmp.path().join("data"),
        &node_tls_yaml(&certs, "required").replace("{id}", "1"),
    );
    assert_eq!(col.scheme, "https");
    let alice = tls_client(&client_tls(&certs, "alice"));
    let r = alice
        .post(col.url("/v1/topics"))
        .json(&json!({"name": "t", "partitions": 1}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap());

    // Each refused at the handshake: no request reaches the API.
    let no_certificate = tls_client(&client::tls::TlsFiles {
        ca_file: certs.join("ca.pem"),
        ..Default::default()
    });
    let other_ca = tls_client(&client::tls::TlsFiles {
        ca_file: certs.join("ca.pem"),
        ..client_tls(&other, "mallory")
    });
    let expired = tls_client(&client_tls(&certs, "old"));
    for (case, c) in [
        ("no-certificate", &no_certificate),
        ("other-ca", &other_ca),
        ("expired", &expired),
    ] {
        let r = produce(c, &col, &format!("refused-{case}"));
        assert!(r.is_err(), "{case}: answered {r:?}");
    }
    // A plaintext client against the TLS listener.
    let plain = client()
        .post(format!("http://{}/v1/topics/t/records", col.addr))
        .json(&json!({"records": [{"value": "refused-plaintext"}]}))
        .send();
    assert!(
        plain.is_err() || !plain.as_ref().unwrap().status().is_success(),
        "plaintext: {plain:?}"
    );
    // Kafka's SSL listener: without a certificate nothing is delivered; with one, records
    // go in and come back out.
    let kafka = col.kafka_address();
    let certdir = certs.to_str().unwrap();
    let v = python_client(&["ssl-roundtrip", &kafka, "t", certdir, "-", "3"]);
    assert_eq!(v["delivered"], json!([]), "{v}");
    let v = python_client(&["ssl-roundtrip", &kafka, "t", certdir, "alice", "5"]);
    assert_eq!(v["delivered"].as_array().unwrap().len(), 5, "{v}");
    assert_eq!(v["read"].as_array().unwrap().len(), 5, "{v}");

    // The node is healthy and the good client still writes.
    assert_eq!(produce(&alice, &col, "accepted").unwrap(), 200);
    let values: Vec<String> = read_topic(&alice, &col.url(""), "t")
        .into_iter()
        .map(|r| String::from_utf8(r.3).unwrap())
        .collect();
    assert!(
        values.iter().all(|v| !v.starts_with("refused")),
        "{values:?}"
    );
    assert!(values.contains(&"accepted".to_owned()), "{values:?}");
    assert_eq!(values.iter().filter(|v| v.starts_with("ssl-")).count(), 5);
    let r = alice.get(col.url("/health")).send().unwrap();
    assert!(r.status().is_success());
    // Refusals are counted (the HTTP ones and at least one of librdkafka's attempts).
    let n = tributary_tests::metric_with(
        &alice,
        &col.url("/metrics"),
        "tributary_tls_handshake_failures_total",
    );
    assert!(n >= 5.0, "handshake failures counted: {n}");
}

/// `collector serve` with `config`; returns whether it exited (with its stderr) or, still
/// running after `wait`, the stderr lines so far (it is then killed).
fn serve_briefly(config: &std::path::Path, wait: Duration) -> (Option<bool>, String) {
    let mut child = Command::new(binary("collector"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(std::sync::Mutex::new(String::new()));
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&l);
            s.push('\n');
        }
    });
    let deadline = Instant::now() + wait;
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status.success());
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    reader.join().unwrap();
    let text = lines.lock().unwrap().clone();
    (exited, text)
}

#[test]
fn a_non_loopback_listener_without_tls_refuses_to_start_unless_insecure_plaintext() {
    let tmp = tempfile::tempdir().unwrap();
    let port = tributary_tests::free_port();
    let base = format!(
        "listen: 0.0.0.0:{port}\nkafka_listen: null\ndata_dirs: [{}]\ncreate_data_dirs: true\n",
        tmp.path().join("data").display()
    );
    let config = tmp.path().join("c.yaml");
    std::fs::write(&config, &base).unwrap();
    let (exited, err) = serve_briefly(&config, Duration::from_secs(20));
    assert_eq!(exited, Some(false), "{err}");
    assert!(
        err.contains("not a loopback address") && err.contains("insecure_plaintext"),
        "{err}"
    );
    assert!(
        !tmp.path().join("data").exists(),
        "refused before touching storage"
    );
    // The Kafka listener is held to the same rule.
    std::fs::write(
        &config,
        base.replace("kafka_listen: null", "kafka_listen: 0.0.0.0:0")
            .replace(&format!("0.0.0.0:{port}"), "127.0.0.1:0"),
    )
    .unwrap();
    let out = Command::new(binary("collector"))
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kafka_listen"));
    // Asked for on purpose: it starts, and says what it is doing.
    std::fs::write(&config, format!("{base}insecure_plaintext: true\n")).unwrap();
    let (exited, err) = serve_briefly(&config, Duration::from_secs(3));
    assert_eq!(exited, None, "it kept running: {err}");
    assert!(
        err.contains("insecure_plaintext") && err.contains("without TLS"),
        "{err}"
    );
}

#[test]
fn sighup_rotates_the_certificate_under_load_without_a_failed_request() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    certs_init(&certs, 2, &["alice"]);
    // The node serves whatever served.pem holds: node1's certificate first, node2's after.
    let install = |from: &str| {
        for (src, dst) in [
            (format!("{from}.pem"), "served.pem"),
            (format!("{from}-key.pem"), "served-key.pem"),
        ] {
            let tmp_dst = certs.join(format!("{dst}.new"));
            std::fs::copy(certs.join(src), &tmp_dst).unwrap();
            std::fs::rename(&tmp_dst, certs.join(dst)).unwrap();
        }
    };
    install("node1");
    let d = certs.display();
    let col = Collector::start(
        &tmp.path().join("data"),
        &format!(
            "tls: {{cert_file: {d}/served.pem, key_file: {d}/served-key.pem, ca_file: {d}/ca.pem, client_auth: optional}}\n"
        ),
    );
    let ca = certs.join("ca.pem");
    assert_eq!(
        tributary_tests::served_certificate(&col.addr, &ca),
        tributary_tests::pem_certificate(&certs.join("node1.pem"))
    );
    let alice = tls_client(&client_tls(&certs, "alice"));
    let r = alice
        .post(col.url("/v1/topics"))
        .json(&json!({"name": "t", "partitions": 1}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // Load: requests on pooled connections and on new ones (new handshakes) throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..2)
        .map(|w| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            let files = client_tls(&certs, "alice");
            let url = col.url("/v1/topics/t/records");
            std::thread::spawn(move || {
                let mut c = tls_client(&files);
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    if w == 1 {
                        c = tls_client(&files);
                    }
                    let r = c
                        .post(&url)
                        .json(&json!({"records": [{"value": format!("w{w}-{i}")}]}))
                        .send();
                    match r {
                        Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::SeqCst),
                        other => {
                            eprintln!("failed: {other:?}");
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    install("node2");
    col.signal(libc::SIGHUP);
    let node2 = tributary_tests::pem_certificate(&certs.join("node2.pem"));
    tributary_tests::wait_for(
        Duration::from_secs(10),
        "the new certificate served",
        || (tributary_tests::served_certificate(&col.addr, &ca) == node2).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(700));
    // A broken file on reload: the node keeps serving the certificate it has.
    std::fs::write(certs.join("served.pem"), "not a certificate").unwrap();
    col.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(tributary_tests::served_certificate(&col.addr, &ca), node2);
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no request failed");
    let n = ok.load(Ordering::SeqCst);
    assert!(n > 20, "requests were answered throughout: {n}");
}

/// `collector <args…>` against `node` with `extra` client flags; (success, stdout, stderr).
fn cli(node: &Collector, extra: &[String], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary("collector"))
        .args(args)
        .args(["--collector", &node.url("")])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cert_flags(certs: &std::path::Path, name: &str) -> Vec<String> {
    let d = certs.display();
    vec![
        "--tls-ca".into(),
        format!("{d}/ca.pem"),
        "--tls-cert".into(),
        format!("{d}/{name}.pem"),
        "--tls-key".into(),
        format!("{d}/{name}-key.pem"),
    ]
}

fn post_records(
    c: &reqwest::blocking::Client,
    node: &Collector,
    topic: &str,
    value: &str,
) -> (u16, serde_json::Value) {
    let r = c
        .post(node.url(&format!("/v1/topics/{topic}/records")))
        .json(&json!({"records": [{"value": value}]}))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(serde_json::Value::Null))
}

#[test]
fn acls_replicate_are_enforced_on_every_node_and_survive_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    certs_init(&certs, 3, &["admin", "alice", "bob"]);
    let tokens = tmp.path().join("tokens");
    let out = Command::new(binary("collector"))
        .args(["tokens", "create", "shipper", "--file"])
        .arg(&tokens)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("trb_"), "{token}");
    assert!(!std::fs::read_to_string(&tokens).unwrap().contains(&token));
    let extra = format!(
        "broker_session_timeout_ms: 2000\nbroker_heartbeat_interval_ms: 300\n{}authorization: acls\nsuperusers: [\"User:admin\"]\ntokens_file: {}\n",
        node_tls_yaml(&certs, "optional"),
        tokens.display()
    );
    let mut cl = tributary_tests::Cluster::start(tmp.path(), 3, &extra);
    let admin = tls_client(&client_tls(&certs, "admin"));
    let alice = tls_client(&client_tls(&certs, "alice"));
    let bob = tls_client(&client_tls(&certs, "bob"));
    let anonymous = tls_client(&client::tls::TlsFiles {
        ca_file: certs.join("ca.pem"),
        ..Default::default()
    });
    for t in ["logs-web", "logs-secret", "other"] {
        let r = admin
            .post(cl.nodes[0].url("/v1/topics"))
            .json(&json!({"name": t, "partitions": 1, "replication_factor": 3}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap());
    }
    // ACLs added through node 1 with the CLI...
    let admin_flags = cert_flags(&certs, "admin");
    for args in [
        &[
            "acls",
            "add",
            "--principal",
            "User:alice",
            "--topic",
            "logs-",
            "--prefixed",
            "--operation",
            "write",
            "--operation",
            "read",
        ][..],
        &[
            "acls",
            "add",
            "--principal",
            "User:alice",
            "--topic",
            "logs-secret",
            "--operation",
            "all",
            "--deny",
        ][..],
        &[
            "acls",
            "add",
            "--principal",
            "User:shipper",
            "--topic",
            "logs-web",
            "--operation",
            "write",
        ][..],
    ] {
        let (ok, _, err) = cli(&cl.nodes[0], &admin_flags, args);
        assert!(ok, "{args:?}: {err}");
    }
    // ...and a principal without ALTER on the cluster cannot add any.
    let (ok, _, err) = cli(
        &cl.nodes[0],
        &cert_flags(&certs, "alice"),
        &[
            "acls",
            "add",
            "--principal",
            "User:alice",
            "--cluster",
            "--operation",
            "all",
        ],
    );
    assert!(!ok && err.contains("forbidden"), "{err}");

    let check = |cl: &tributary_tests::Cluster, round: &str| {
        for node in &cl.nodes {
            // PREFIXED allow.
            let (s, body) = post_records(&alice, node, "logs-web", &format!("ok-alice-{round}"));
            assert_eq!(s, 200, "{body}");
            // DENY wins over the PREFIXED allow: 403 naming the operation and resource.
            let (s, body) = post_records(&alice, node, "logs-secret", "refused-deny");
            assert_eq!(s, 403, "{body}");
            assert_eq!(body["error"]["code"], "forbidden");
            let m = body["error"]["message"].as_str().unwrap();
            assert!(
                m.contains("User:alice") && m.contains("Write") && m.contains("logs-secret"),
                "{m}"
            );
            // No ACL at all.
            let (s, _) = post_records(&alice, node, "other", "refused-no-acl");
            assert_eq!(s, 403);
            let (s, _) = post_records(&bob, node, "logs-web", "refused-bob");
            assert_eq!(s, 403);
            // Listings show only what the principal may DESCRIBE.
            let meta: serde_json::Value = bob
                .get(node.url("/v1/metadata"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            assert_eq!(meta["topics"], json!([]), "{meta}");
            let meta: serde_json::Value = alice
                .get(node.url("/v1/metadata"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            let names: Vec<&str> = meta["topics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, ["logs-web"], "{meta}");
            // Tokens: the right one writes; a wrong one and none are 401.
            let r = anonymous
                .post(node.url("/v1/topics/logs-web/records"))
                .bearer_auth(&token)
                .json(&json!({"records": [{"value": format!("ok-shipper-{round}")}]}))
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            let r = anonymous
                .post(node.url("/v1/topics/logs-web/records"))
                .bearer_auth("trb_0000")
                .json(&json!({"records": [{"value": "refused-bad-token"}]}))
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 401);
            assert_eq!(
                r.json::<serde_json::Value>().unwrap()["error"]["code"],
                "unauthenticated"
            );
            let (s, _) = post_records(&anonymous, node, "logs-web", "refused-anonymous");
            assert_eq!(s, 401);
            // A client token on a broker-only route.
            let r = anonymous
                .get(node.url("/internal/partition-offsets?topic=logs-web&partition=0"))
                .bearer_auth(&token)
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 403);
        }
    };
    check(&cl, "1");
    // A consumer without READ on its group is refused; with it, it reads.
    let alice_flags = cert_flags(&certs, "alice");
    let tail_args = ["tail", "--group", "g", "--topic", "logs-web", "--no-follow"];
    let (ok, _, err) = cli(&cl.nodes[1], &alice_flags, &tail_args);
    assert!(!ok && err.contains("forbidden"), "{err}");
    let (ok, _, err) = cli(
        &cl.nodes[1],
        &admin_flags,
        &[
            "acls",
            "add",
            "--principal",
            "User:alice",
            "--group",
            "g",
            "--operation",
            "read",
        ],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&cl.nodes[1], &alice_flags, &tail_args);
    assert!(ok, "{err}");
    assert!(
        out.contains("ok-alice-1") && out.contains("ok-shipper-1"),
        "{out}"
    );
    // Kafka: bob's certificate gets TOPIC_AUTHORIZATION_FAILED, nothing delivered.
    let kafka = cl.nodes[2].kafka_address();
    let v = python_client(&[
        "ssl-roundtrip",
        &kafka,
        "logs-web",
        certs.to_str().unwrap(),
        "bob",
        "2",
    ]);
    assert_eq!(v["delivered"], json!([]), "{v}");
    assert!(
        v["errors"].to_string().to_lowercase().contains("authoriz"),
        "{v}"
    );

    // Every node restarts: the ACLs are in the replicated metadata.
    for id in 1..=3 {
        cl.node(id).kill9();
        cl.node(id).restart();
    }
    // A restarted broker leaves the ISRs and hands its leaderships on until it has caught
    // up: until every replica is back in sync a write may be answered 503 (retriable).
    let addrs: Vec<String> = cl.nodes.iter().map(|n| n.url("")).collect();
    tributary_tests::wait_for(Duration::from_secs(60), "logs-web in sync again", || {
        let meta: serde_json::Value = admin
            .get(cl.nodes[0].url("/v1/metadata"))
            .send()
            .ok()?
            .json()
            .ok()?;
        let in_sync = meta["topics"]
            .as_array()?
            .iter()
            .filter(|t| t["name"] == "logs-web")
            .flat_map(|t| t["partitions"].as_array().cloned().unwrap_or_default())
            .all(|p| p["isr"].as_array().is_some_and(|i| i.len() == 3));
        if !in_sync {
            return None;
        }
        let leader = tributary_tests::leader_url(&admin, &addrs, "logs-web", 0)?
            .replacen("http://", "https://", 1);
        let r = admin
            .get(format!(
                "{leader}/v1/topics/logs-web/partitions/0/records?offset=0&limit=1"
            ))
            .send()
            .ok()?;
        r.status().is_success().then_some(())
    });
    check(&cl, "2");
    let (ok, out, err) = cli(
        &cl.nodes[2],
        &admin_flags,
        &["acls", "list", "--output", "json"],
    );
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["acls"].as_array().unwrap().len(), 5, "{listed}");
    // Nothing a refused request sent was written.
    for t in ["logs-web", "logs-secret", "other"] {
        let values: Vec<String> = read_topic(&admin, &cl.nodes[0].url(""), t)
            .into_iter()
            .map(|r| String::from_utf8(r.3).unwrap())
            .collect();
        assert!(
            values.iter().all(|v| v.starts_with("ok-")),
            "{t}: {values:?}"
        );
        if t == "logs-web" {
            assert_eq!(values.len(), 12, "{values:?}");
        }
    }
    // The token never reached a log (failed authentications are logged, with the peer).
    let logs = tributary_tests::collector_logs();
    assert!(logs.iter().any(|l| l.contains("authentication failed")));
    assert!(
        !logs
            .iter()
            .any(|l| l.contains(&token) || l.contains(&token[4..20])),
        "a token in the logs"
    );
    // Removing an ACL takes effect everywhere.
    let (ok, _, err) = cli(
        &cl.nodes[0],
        &admin_flags,
        &["acls", "remove", "--principal", "User:shipper"],
    );
    assert!(ok, "{err}");
    tributary_tests::wait_for(
        Duration::from_secs(10),
        "the removal applied everywhere",
        || {
            cl.nodes
                .iter()
                .all(|n| {
                    anonymous
                        .post(n.url("/v1/topics/logs-web/records"))
                        .bearer_auth(&token)
                        .json(&json!({"records": [{"value": "refused-removed"}]}))
                        .send()
                        .is_ok_and(|r| r.status().as_u16() == 403)
                })
                .then_some(())
        },
    );
}

#[test]
fn kafka_sasl_plain_and_scram_authenticate_principals_the_acls_then_govern() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    certs_init(&certs, 1, &["admin"]);
    let users = tmp.path().join("sasl-users");
    for (name, password) in [("alice", "alice-secret-1"), ("bob", "bob-secret-22")] {
        let mut child = Command::new(binary("collector"))
            .args(["sasl-users", "add", name, "--file"])
            .arg(&users)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            child.stdin.as_mut().unwrap(),
            format!("{password}\n").as_bytes(),
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stored = std::fs::read_to_string(&users).unwrap();
    assert!(!stored.contains("alice-secret-1") && !stored.contains("bob-secret-22"));
    let col = Collector::start(
        &tmp.path().join("data"),
        &format!(
            "{}authorization: acls\nsuperusers: [\"User:admin\"]\nsasl_users_file: {}\n",
            node_tls_yaml(&certs, "optional").replace("{id}", "1"),
            users.display()
        ),
    );
    let admin = tls_client(&client_tls(&certs, "admin"));
    let r = admin
        .post(col.url("/v1/topics"))
        .json(&json!({"name": "t", "partitions": 1}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let r = admin
        .post(col.url("/v1/acls"))
        .json(&json!({"acls": [
            {"principal": "User:alice", "resource_type": "TOPIC", "resource_name": "t", "operation": "WRITE", "permission": "ALLOW"},
            {"principal": "User:alice", "resource_type": "TOPIC", "resource_name": "t", "operation": "READ", "permission": "ALLOW"},
            {"principal": "User:alice", "resource_type": "GROUP", "resource_name": "*", "operation": "READ", "permission": "ALLOW"}
        ]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap());
    let kafka = col.kafka_address();
    let ca = certs.join("ca.pem");
    let ca = ca.to_str().unwrap();
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] {
        let v = python_client(&[
            "sasl-roundtrip",
            &kafka,
            "t",
            ca,
            mechanism,
            "alice",
            "alice-secret-1",
            "3",
        ]);
        assert_eq!(
            v["delivered"].as_array().unwrap().len(),
            3,
            "{mechanism}: {v}"
        );
        assert!(v["read"].as_array().unwrap().len() >= 3, "{mechanism}: {v}");
    }
    // A wrong password: nothing delivered, authentication named.
    let v = python_client(&[
        "sasl-roundtrip",
        &kafka,
        "t",
        ca,
        "SCRAM-SHA-256",
        "alice",
        "wrong-password",
        "2",
    ]);
    assert_eq!(v["delivered"], json!([]), "{v}");
    assert!(
        v["errors"]
            .to_string()
            .to_lowercase()
            .contains("authentication"),
        "{v}"
    );
    // An authenticated principal without ACLs.
    let v = python_client(&[
        "sasl-roundtrip",
        &kafka,
        "t",
        ca,
        "SCRAM-SHA-512",
        "bob",
        "bob-secret-22",
        "2",
    ]);
    assert_eq!(v["delivered"], json!([]), "{v}");
    assert!(
        v["errors"].to_string().to_lowercase().contains("authoriz"),
        "{v}"
    );
    // ACLs over the Kafka protocol: the admin grants bob WRITE with CreateAcls; then bob
    // writes, and DescribeAcls lists the grant.
    let v = python_client(&[
        "acl-admin",
        &kafka,
        certs.to_str().unwrap(),
        "admin",
        "User:bob",
        "t",
    ]);
    assert_eq!(v["errors"], json!([]), "{v}");
    assert!(v["acls"].to_string().contains("User:bob"), "{v}");
    let r = admin
        .get(col.url("/v1/acls?principal=User:bob"))
        .send()
        .unwrap();
    let listed: serde_json::Value = r.json().unwrap();
    assert_eq!(listed["acls"][0]["operation"], "WRITE", "{listed}");
    let v = python_client(&[
        "sasl-roundtrip",
        &kafka,
        "t",
        ca,
        "PLAIN",
        "bob",
        "bob-secret-22",
        "2",
    ]);
    assert_eq!(v["delivered"].as_array().unwrap().len(), 2, "{v}");
    // Only what authenticated, authorized clients sent is in the log.
    let values: Vec<String> = read_topic(&admin, &col.url(""), "t")
        .into_iter()
        .map(|r| String::from_utf8(r.3).unwrap())
        .collect();
    assert_eq!(values.len(), 3 * 3 + 2, "{values:?}");
    let n = tributary_tests::metric_with(
        &admin,
        &col.url("/metrics"),
        "tributary_authentication_failures_total",
    );
    assert!(n >= 1.0, "failed authentications counted: {n}");
    // No password, right or wrong, reached the log.
    let logs = tributary_tests::collector_logs();
    for secret in ["alice-secret-1", "bob-secret-22", "wrong-password"] {
        assert!(
            !logs.iter().any(|l| l.contains(secret)),
            "{secret} in the logs"
        );
    }
    let metrics = admin
        .get(col.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(!metrics.contains("secret"));
}

#[test]
fn two_thousand_stalled_connections_do_not_delay_a_well_behaved_producer() {
    let tmp = tempfile::tempdir().unwrap();
    // Few request slots, so stalled bodies holding them would block everyone.
    let col = Collector::start(
        &tmp.path().join("data"),
        "limits:\n  max_in_flight_requests: 32\n  header_read_timeout_ms: 6000\n  body_read_timeout_ms: 6000\n",
    );
    let c = client();
    let r = c
        .post(col.url("/v1/topics"))
        .json(&json!({"name": "t", "partitions": 1}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let (host, port) = col.addr.rsplit_once(':').unwrap();
    let mut staller = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/net/stall.py"))
        .args([host, port, "2000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(staller.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let opened: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(opened["opened"], 2000, "{line}");
    let started = Instant::now();
    // A producer on its own connection: every acks=all request answered promptly while
    // the stalled connections are all open.
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        let r = c
            .post(col.url("/v1/topics/t/records?acks=all"))
            .json(&json!({"records": [{"value": format!("good-{i}")}]}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the producer finished while the stalls were still open"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "slowest request: {slowest:?}"
    );
    // After the timeouts, the server has closed every stalled connection.
    std::thread::sleep(Duration::from_secs(9).saturating_sub(started.elapsed()));
    drop(staller.stdin.take());
    line.clear();
    out.read_line(&mut line).unwrap();
    let closed: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(closed["closed"], 2000, "{line}");
    let _ = staller.wait();
    let metrics = c.get(col.url("/metrics")).send().unwrap().text().unwrap();
    let n = tributary_tests::metric_value(&metrics, "tributary_body_timeouts_total").unwrap_or(0.0);
    assert!(n >= 1000.0, "bodies timed out: {n}");
    let values: Vec<String> = read_topic(&c, &col.url(""), "t")
        .into_iter()
        .map(|r| String::from_utf8(r.3).unwrap())
        .collect();
    assert_eq!(values.len(), 20, "only the producer's records: {values:?}");
}
