//! Process-level test harness: spawns the real `collector` binary on `127.0.0.1:0` with a
//! temp data directory, finds its address from its first line of output, and offers a small
//! blocking HTTP client. Used by `tests/tests/*.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

pub mod fsyncfault;
pub mod history;
pub mod netfault;
pub mod powerloss;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shared::{BatchBuilder, BatchEncoder, Compression, ProducerStamp};

/// Builds the workspace binaries once per test process: the tests spawn `collector` and
/// `agent`, which cargo does not rebuild for this package on its own.
fn build_binaries() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--bins", "-p", "collector", "-p", "agent"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build for the binaries");
        assert!(status.success(), "building the binaries failed");
    });
}

/// Path of a workspace binary, (re)built for this test run — or, when `TRIB_BIN_DIR` is
/// set, taken as built from that directory (a long campaign runs against a copy of the
/// binaries while the workspace is rebuilt: `scripts/campaign.sh` does that).
pub fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("TRIB_BIN_DIR") {
        let path = PathBuf::from(dir).join(name);
        assert!(path.exists(), "TRIB_BIN_DIR has no {}", path.display());
        return path;
    }
    build_binaries();
    // Integration tests live in target/<profile>/deps; binaries one level up.
    let mut dir = std::env::current_exe().unwrap();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace` first (nextest builds it)",
        path.display()
    );
    path
}

/// A running collector process.
#[derive(Debug)]
pub struct Collector {
    pub child: Child,
    pub addr: String,
    pub data: PathBuf,
    pub config: PathBuf,
    /// `https` when the config has a `tls:` section.
    pub scheme: &'static str,
    /// A client this collector accepts: plain, or over TLS with the node's own
    /// certificate as client certificate (node certificates are valid for both ends).
    pub http: reqwest::blocking::Client,
    /// Set once the collector says it is stopping itself (a failed fsync, its Raft core
    /// gone): it hands off its leaderships and exits with an error.
    stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// What a collector logs when it stops itself (`node::run`).
const SELF_STOP_LINE: &str = "this node cannot go on safely";

impl Collector {
    /// Whether the collector said it is stopping itself (it may not have exited yet).
    pub fn is_stopping_itself(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Starts a single-node collector with `extra` YAML appended to a minimal config.
    pub fn start(data: &Path, extra: &str) -> Self {
        std::fs::create_dir_all(data).unwrap();
        let config = data.with_extension("yaml");
        let yaml = format!(
            "listen: 127.0.0.1:0\nkafka_listen: 127.0.0.1:0\ndata_dirs: [{}]\n{extra}",
            data.display()
        );
        std::fs::write(&config, yaml).unwrap();
        Self::start_with(data, &config)
    }

    pub fn start_with(data: &Path, config: &Path) -> Self {
        let c = Self::spawn(data, config);
        c.wait_healthy();
        c
    }

    /// Starts the process and waits only for it to listen (a cluster node cannot become
    /// healthy before a quorum of its peers is up). A start that fails because its port is
    /// taken (another test's connection may hold it for a moment: ports are chosen before
    /// the process binds them, and a restart reuses its port) is retried with backoff for
    /// up to [`BIND_RETRY_FOR`].
    pub fn spawn(data: &Path, config: &Path) -> Self {
        let deadline = Instant::now() + BIND_RETRY_FOR;
        let mut pause = Duration::from_millis(100);
        loop {
            match Self::try_spawn(data, config) {
                Ok(c) => return c,
                Err(SpawnError::PortInUse) if Instant::now() < deadline => {
                    eprintln!("collector port in use; retrying in {pause:?}");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(SpawnError::PortInUse) => {
                    panic!("collector port still in use after {BIND_RETRY_FOR:?}")
                }
                Err(SpawnError::Exited(status)) => {
                    panic!("collector exited before listening: {status}")
                }
            }
        }
    }

    fn try_spawn(data: &Path, config: &Path) -> Result<Self, SpawnError> {
        let mut cmd = Command::new(binary("collector"));
        // A `<data>.clock` file puts the node's wall clock that many seconds off (see
        // `Cluster::set_clock_offset`); the monotonic clock stays true, as under NTP steps.
        let clock = data.with_extension("clock");
        if clock.exists() {
            cmd.env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", &clock)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_CACHE_DURATION", "1");
        }
        // A `<data>.power-journal` file turns on the power-loss journal (see
        // [`Collector::cut_power`]).
        let journal = data.with_extension("power-journal");
        if journal.exists() {
            cmd.env("TRIBUTARY_POWER_LOSS_JOURNAL", &journal);
        }
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(config)
            // openraft reports every RPC to a killed node; the tests kill nodes on purpose.
            .env(
                "RUST_LOG",
                std::env::var("TRIB_COLLECTOR_LOG").unwrap_or_else(|_| "warn,openraft=off".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        // The collector's log goes on to the test's stderr; a bind failure is noted.
        let in_use = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = in_use.clone();
        let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stops = stopping.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("in use") {
                    seen.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                if line.contains(SELF_STOP_LINE) {
                    stops.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                eprintln!("{line}");
                let mut logs = COLLECTOR_LOGS.lock().unwrap_or_else(|p| p.into_inner());
                if logs.len() < COLLECTOR_LOG_LINES_MAX {
                    logs.push(line);
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                let addr = line.rsplit("://").next().unwrap().trim().to_owned();
                let tls = node_tls(config);
                Ok(Self {
                    child,
                    addr,
                    data: data.to_path_buf(),
                    config: config.to_path_buf(),
                    scheme: if tls.is_some() { "https" } else { "http" },
                    http: match tls {
                        Some(files) => tls_client(&files),
                        None => client(),
                    },
                    stopping,
                })
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                // Let the stderr reader see the last lines.
                std::thread::sleep(Duration::from_millis(50));
                if in_use.load(std::sync::atomic::Ordering::SeqCst) {
                    Err(SpawnError::PortInUse)
                } else {
                    Err(SpawnError::Exited(status))
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// The `host:port` of this collector's Kafka listener, as its metadata advertises it.
    pub fn kafka_address(&self) -> String {
        let meta: serde_json::Value = self
            .http
            .get(self.url("/v1/metadata"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        meta["brokers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["address"] == self.addr.as_str())
            .and_then(|b| b["kafka_address"].as_str())
            .unwrap_or_else(|| panic!("no Kafka address for {} in {meta}", self.addr))
            .to_owned()
    }

    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(self.url("/health")).send()
                && r.status().is_success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("collector at {} never became healthy", self.addr);
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// A power cut: `kill -9`, then every file the process wrote loses what it had not
    /// fsynced (see [`powerloss`]). Needs the power-loss journal (clusters from
    /// [`Cluster::start_with_net`] have it). Restart it with [`Collector::restart`].
    pub fn cut_power(&mut self, seed: u64) -> powerloss::Cut {
        let journal = self.data.with_extension("power-journal");
        assert!(journal.exists(), "no power-loss journal for {}", self.addr);
        self.kill9();
        powerloss::cut_power(&journal, seed).unwrap()
    }

    /// SIGSTOP: the process stays alive but answers nothing (a GC pause, a hung disk).
    pub fn pause(&self) {
        assert_eq!(unsafe_kill(self.child.id() as i32, libc::SIGSTOP), 0);
    }

    /// SIGCONT after [`Collector::pause`].
    pub fn resume(&self) {
        assert_eq!(unsafe_kill(self.child.id() as i32, libc::SIGCONT), 0);
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the process.
    pub fn signal(&self, signal: i32) {
        assert_eq!(unsafe_kill(self.child.id() as i32, signal), 0);
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY-free: libc::kill on our own child's pid.
        let pid = self.child.id() as i32;
        assert_eq!(unsafe_kill(pid, libc::SIGTERM), 0);
        self.child.wait().unwrap()
    }

    /// Restarts on the same data directory, config and port (clients keep their URL), and
    /// waits until it is healthy.
    pub fn restart(&mut self) {
        self.relaunch();
        self.wait_healthy();
    }

    /// [`Collector::restart`] without waiting for health (a cluster node is healthy only once
    /// a quorum is up: after a cut of every node, relaunch them all, then wait).
    pub fn relaunch(&mut self) {
        let data = self.data.clone();
        let config = self.config.clone();
        let text = std::fs::read_to_string(&config).unwrap();
        // Only the HTTP `listen:` line (a `kafka_listen:` line keeps its own setting).
        let text: String = text
            .lines()
            .map(|l| {
                if l == "listen: 127.0.0.1:0" {
                    format!("listen: {}\n", self.addr)
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&config, text).unwrap();
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = Self::spawn(&data, &config);
    }
}

/// Every line any collector of this test process wrote to stderr (its log), so a test can
/// check what was and was not logged.
static COLLECTOR_LOGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
const COLLECTOR_LOG_LINES_MAX: usize = 200_000;

/// The log lines of every collector this test process started, so far.
pub fn collector_logs() -> Vec<String> {
    COLLECTOR_LOGS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// How long [`Collector::spawn`] retries a start whose port is taken.
const BIND_RETRY_FOR: Duration = Duration::from_secs(20);

#[derive(Debug)]
enum SpawnError {
    PortInUse,
    Exited(std::process::ExitStatus),
}

/// A port on 127.0.0.1 that was free a moment ago, for configs that must name their ports
/// before the processes start (cluster voters). Chosen below the kernel's ephemeral range
/// (32768 and up on Linux), where outgoing connections take their local ports, so a
/// parallel test's connection rarely lands on it; a start that still finds it taken is
/// retried by [`Collector::spawn`].
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Spread over the range by process, then walk it.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    let start = (std::process::id() % u32::from(SPAN)) as u16;
    for _ in 0..SPAN {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + (start.wrapping_add(k.wrapping_mul(7919)) % SPAN);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// libfaketime, which shifts a process's wall clock (Debian's `libfaketime` package).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Whether clock faults can run here: libfaketime is installed. Under `CI=true` it must be
/// (`.ci/run` installs it), so a campaign never silently drops its clock jumps there.
pub fn clock_faults_available() -> bool {
    let here = Path::new(LIBFAKETIME).exists();
    assert!(
        here || std::env::var_os("CI").is_none(),
        "CI=true but {LIBFAKETIME} is missing (apt-get install libfaketime)"
    );
    here
}

/// Collectors forming one cluster: node ids 1..=n, all voters, on fixed free ports.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<Collector>,
}

impl Cluster {
    /// Starts `n` voters concurrently with `extra` YAML in each config (`{id}` replaced by
    /// the node's id), and waits until every one is healthy (registered with the
    /// controller).
    pub fn start(dir: &Path, n: usize, extra: &str) -> Self {
        Self::start_with_brokers(dir, n, 0, extra)
    }

    /// `voters` voters (ids 1..=voters) and `brokers` brokers that only follow the metadata
    /// log as learners (the ids after).
    pub fn start_with_brokers(dir: &Path, voters: usize, brokers: usize, extra: &str) -> Self {
        let ports: Vec<u16> = (0..voters + brokers).map(|_| free_port()).collect();
        Self::start_on(dir, &ports, voters, |_| extra.to_owned())
    }

    /// `n` voters whose connections to each other all pass through relays of a
    /// [`netfault::Net`] (so the test can partition, cut one way, or slow links), each with
    /// its power-loss journal on (so the test can cut its power: [`Collector::cut_power`]).
    pub fn start_with_net(dir: &Path, n: usize, extra: &str) -> (Self, netfault::Net) {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let net = netfault::Net::new(&ports);
        if clock_faults_available() {
            for id in 1..=n {
                std::fs::write(dir.join(format!("node{id}.clock")), "+0\n").unwrap();
            }
        }
        for id in 1..=n {
            std::fs::write(dir.join(format!("node{id}.power-journal")), "").unwrap();
        }
        let cluster = Self::start_on(dir, &ports, n, |id| {
            format!("{extra}{}", net.dial_overrides_yaml(id, &ports))
        });
        (cluster, net)
    }

    /// Whether node `id` runs under libfaketime (clusters from [`Cluster::start_with_net`],
    /// where it is installed).
    pub fn has_clock(&self, id: u64) -> bool {
        self.nodes[(id - 1) as usize]
            .data
            .with_extension("clock")
            .exists()
    }

    /// Puts node `id`'s wall clock `secs` seconds off the true time (0: true again); the
    /// process sees the jump within a second.
    pub fn set_clock_offset(&self, id: u64, secs: i64) {
        let file = self.nodes[(id - 1) as usize].data.with_extension("clock");
        std::fs::write(file, format!("{secs:+}\n")).unwrap();
    }

    /// Nodes on `ports` (ids 1..), the first `voters` of them voters; `extra(id)` is YAML
    /// added to node `id`'s config.
    fn start_on(dir: &Path, ports: &[u16], voters: usize, extra: impl Fn(u64) -> String) -> Self {
        let voters: String = ports
            .iter()
            .take(voters)
            .enumerate()
            .map(|(i, p)| format!("    - {{id: {}, address: \"127.0.0.1:{p}\"}}\n", i + 1))
            .collect();
        let nodes: Vec<Collector> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let data = dir.join(format!("node{}", i + 1));
                std::fs::create_dir_all(&data).unwrap();
                let config = data.with_extension("yaml");
                // `{id}` in `extra` is this node's id (per-node certificate files).
                let extra = extra(i as u64 + 1).replace("{id}", &(i + 1).to_string());
                std::fs::write(
                    &config,
                    format!(
                        "node_id: {}\nlisten: 127.0.0.1:{p}\nkafka_listen: 127.0.0.1:0\ndata_dirs: [{}]\ncontroller:\n  voters:\n{voters}{extra}",
                        i + 1,
                        data.display()
                    ),
                )
                .unwrap();
                Collector::spawn(&data, &config)
            })
            .collect();
        for n in &nodes {
            n.wait_healthy();
        }
        Self { nodes }
    }

    /// Node `id` (1-based).
    pub fn node(&mut self, id: u64) -> &mut Collector {
        &mut self.nodes[(id - 1) as usize]
    }
}

#[allow(unsafe_code)]
fn unsafe_kill(pid: i32, sig: i32) -> i32 {
    // SAFETY: sending a signal to a process id has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Runs `tests/kafka/clients.py` (real Kafka clients) with `args`; its one JSON line.
pub fn python_client(args: &[&str]) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/kafka/clients.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// One sample of `/metrics` at `url`, read with client `c` (0 when absent).
pub fn metric_with(c: &reqwest::blocking::Client, url: &str, name: &str) -> f64 {
    let text = c.get(url).send().unwrap().text().unwrap();
    metric_value(&text, name).unwrap_or(0.0)
}

/// A client over TLS with these files (the CA, and optionally a client certificate).
pub fn tls_client(files: &client::tls::TlsFiles) -> reqwest::blocking::Client {
    let tls = client::tls::client_config(files).unwrap();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .use_preconfigured_tls((*tls).clone())
        .build()
        .unwrap()
}

/// The TLS files of a collector config (its CA, and its own certificate to use as a
/// client certificate), if it has a `tls:` section.
fn node_tls(config: &Path) -> Option<client::tls::TlsFiles> {
    let text = std::fs::read_to_string(config).ok()?;
    let v: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
    let t = v.get("tls")?;
    let path = |k: &str| t.get(k).and_then(|p| p.as_str()).map(PathBuf::from);
    Some(client::tls::TlsFiles {
        ca_file: path("ca_file")?,
        cert_file: path("cert_file"),
        key_file: path("key_file"),
        server_name: None,
    })
}

/// The end-entity certificate (DER) a TLS server at `addr` presents, checked against the
/// CA in `ca_file` (no client certificate is shown).
pub fn served_certificate(addr: &str, ca_file: &Path) -> Vec<u8> {
    let config = client::tls::client_config(&client::tls::TlsFiles {
        ca_file: ca_file.to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    let host = addr.rsplit_once(':').unwrap().0.to_owned();
    let name = client::rustls::pki_types::ServerName::try_from(host).unwrap();
    let mut conn = client::rustls::ClientConnection::new(config, name).unwrap();
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

/// The DER of the first certificate in a PEM file.
pub fn pem_certificate(path: &Path) -> Vec<u8> {
    client::tls::load_certs(path).unwrap()[0].as_ref().to_vec()
}

/// `collector certs init --dir <dir> --hosts 127.0.0.1 ×n --clients <clients>`: a CA,
/// `node<i>.pem` for nodes 1..=n and `<name>.pem` per client, in `dir`.
pub fn certs_init(dir: &Path, nodes: usize, clients: &[&str]) {
    let hosts = vec!["127.0.0.1"; nodes].join(",");
    let out = Command::new(binary("collector"))
        .args(["certs", "init", "--dir"])
        .arg(dir)
        .args(["--hosts", &hosts, "--clients", &clients.join(",")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "certs init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `tls:` YAML of node `{id}` (left for [`Cluster`] to fill in) with certificates from
/// [`certs_init`] in `dir`.
pub fn node_tls_yaml(dir: &Path, client_auth: &str) -> String {
    let d = dir.display();
    format!(
        "tls: {{cert_file: {d}/node{{id}}.pem, key_file: {d}/node{{id}}-key.pem, ca_file: {d}/ca.pem, client_auth: {client_auth}}}\n"
    )
}

/// Client TLS files for the certificate `name` from [`certs_init`] in `dir`.
pub fn client_tls(dir: &Path, name: &str) -> client::tls::TlsFiles {
    client::tls::TlsFiles {
        ca_file: dir.join("ca.pem"),
        cert_file: Some(dir.join(format!("{name}.pem"))),
        key_file: Some(dir.join(format!("{name}-key.pem"))),
        server_name: None,
    }
}

/// Encodes one batch of `values` with an optional producer identity.
pub fn batch(values: &[String], stamp: ProducerStamp, zstd: bool) -> Vec<u8> {
    batch_at(values, stamp, zstd, 1_700_000_000_000)
}

/// [`batch`] with every record stamped `timestamp_ms`.
pub fn batch_at(values: &[String], stamp: ProducerStamp, zstd: bool, timestamp_ms: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    for v in values {
        b.push(
            timestamp_ms,
            None,
            Some(v.as_bytes()),
            &[(b"host".as_slice(), b"test".as_slice())],
        );
    }
    let compression = if zstd {
        Compression::Zstd
    } else {
        Compression::None
    };
    BatchEncoder::new(compression, 3)
        .unwrap()
        .encode(&b, stamp)
        .unwrap()
}

/// Base URL of the leader of partition `p` of `topic`, from the first of `addrs` whose
/// metadata answers.
pub fn leader_url(
    c: &reqwest::blocking::Client,
    addrs: &[String],
    topic: &str,
    p: u32,
) -> Option<String> {
    addrs.iter().find_map(|a| {
        let v: serde_json::Value = c.get(format!("{a}/v1/metadata")).send().ok()?.json().ok()?;
        let t = v["topics"]
            .as_array()?
            .iter()
            .find(|t| t["name"] == topic)?
            .clone();
        let l = t["partitions"][p as usize]["leader"].as_u64()?;
        let addr = v["brokers"].as_array()?.iter().find(|b| b["id"] == l)?["address"]
            .as_str()?
            .to_owned();
        Some(format!("http://{addr}"))
    })
}

/// Posts batch bytes; returns (status, JSON body).
pub fn produce(
    c: &reqwest::blocking::Client,
    base: &str,
    topic: &str,
    partition: u32,
    bytes: Vec<u8>,
) -> (u16, serde_json::Value) {
    let r = c
        .post(format!(
            "{base}/v1/topics/{topic}/partitions/{partition}/batches?acks=all"
        ))
        .header("content-type", "application/vnd.tributary.batches")
        .body(bytes)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(serde_json::Value::Null))
}

/// Reads every record value of a partition from `offset` up to its high watermark.
pub fn read_all(
    c: &reqwest::blocking::Client,
    base: &str,
    topic: &str,
    partition: u32,
) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    loop {
        let (records, next, hw) = fetch_once(c, base, topic, partition, offset, 4 << 20)
            .unwrap_or_else(|e| panic!("fetch {topic}-{partition} at {offset}: {e}"));
        if records.is_empty() && next == offset {
            assert!(
                offset >= hw,
                "empty fetch at {offset} below the high watermark {hw}"
            );
            return out;
        }
        out.extend(records);
        offset = next;
    }
}

/// What [`fetch_once`] returns: records (offset, value), the next offset, the high watermark.
pub type Fetched = (Vec<(u64, String)>, u64, u64);

/// One fetch from `offset`: the records at or after it (offset, value), the offset after the
/// last batch returned, and the high watermark. An error names what went wrong (a refusal's
/// status, a transport error, bytes that do not decode).
pub fn fetch_once(
    c: &reqwest::blocking::Client,
    base: &str,
    topic: &str,
    partition: u32,
    offset: u64,
    max_bytes: u64,
) -> Result<Fetched, String> {
    let limits = shared::BatchLimits::default();
    let r = c
        .get(format!("{base}/v1/topics/{topic}/partitions/{partition}/batches?offset={offset}&max_bytes={max_bytes}"))
        .send()
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("fetch: {}", r.status()));
    }
    let hw: u64 = r
        .headers()
        .get("tributary-high-watermark")
        .and_then(|h| h.to_str().ok()?.parse().ok())
        .ok_or("no high watermark header")?;
    let bytes = r.bytes().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut next = offset;
    for item in shared::BatchIter::new(&bytes, limits) {
        let (h, b) = item.map_err(|e| e.to_string())?;
        for rec in shared::DecodedRecords::new(b, &limits)
            .map_err(|e| e.to_string())?
            .iter()
        {
            let o = h.base_offset as u64 + rec.offset_delta as u64;
            if o >= offset {
                let v = rec.value.ok_or("a record without a value")?;
                out.push((o, String::from_utf8_lossy(v).into_owned()));
            }
        }
        next = h.next_offset() as u64;
    }
    Ok((out, next, hw))
}

/// A running agent process.
#[derive(Debug)]
pub struct AgentProc {
    pub child: Child,
    pub config: PathBuf,
}

impl AgentProc {
    /// Starts `agent run --config <config>` and waits for it to report ready.
    pub fn start(config: &Path) -> Self {
        Self::start_with_env(config, &[])
    }

    /// As [`AgentProc::start`], with extra environment variables.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(binary("agent"))
            .args(["run", "--config"])
            .arg(config)
            // `TRIBUTARY_AGENT_LOG=info` shows the agent's decisions when debugging a test.
            .env(
                "RUST_LOG",
                std::env::var("TRIBUTARY_AGENT_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("agent did not become ready within 60 s");
        assert!(line.contains("ready"), "{line}");
        Self {
            child,
            config: config.to_path_buf(),
        }
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn restart(&mut self) {
        let config = self.config.clone();
        *self = Self::start(&config);
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        assert_eq!(unsafe_kill(self.child.id() as i32, libc::SIGTERM), 0);
        self.child.wait().unwrap()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One record read back: `(partition, offset, headers, value)`.
pub type TopicRecord = (u32, u64, Vec<(String, String)>, Vec<u8>);

/// Every record of every partition of a topic, from each partition's log start.
/// Each partition is read from its leader (from `base`'s metadata), so this works against a
/// cluster too.
/// While leadership moves (a node was just killed) a leader named by the metadata may answer
/// `not_leader`: the whole read starts over with fresh metadata, for up to 30 s.
pub fn read_topic(c: &reqwest::blocking::Client, base: &str, topic: &str) -> Vec<TopicRecord> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match try_read_topic(c, base, topic) {
            Ok(records) => return records,
            Err(status) => {
                assert!(Instant::now() < deadline, "fetch: {status} for 30 s");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn try_read_topic(
    c: &reqwest::blocking::Client,
    base: &str,
    topic: &str,
) -> Result<Vec<TopicRecord>, reqwest::StatusCode> {
    let meta: serde_json::Value = c
        .get(format!("{base}/v1/metadata"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let addresses: std::collections::BTreeMap<u64, String> = meta["brokers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|b| Some((b["id"].as_u64()?, b["address"].as_str()?.to_owned())))
        .collect();
    let t = meta["topics"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .find(|t| t["name"] == topic)
        .unwrap_or_default();
    let limits = shared::BatchLimits::default();
    let mut out = Vec::new();
    for p in t["partitions"].as_array().cloned().unwrap_or_default() {
        let partition = p["partition"].as_u64().unwrap() as u32;
        let leader = p["leader"]
            .as_u64()
            .and_then(|l| addresses.get(&l))
            .map_or_else(
                || base.to_owned(),
                |a| {
                    let scheme = base.split_once("://").map_or("http", |(s, _)| s);
                    format!("{scheme}://{a}")
                },
            );
        // From the log start (retention may have moved it past 0), as the leader knows it.
        let mut offset = c
            .get(format!("{leader}/v1/topics/{topic}"))
            .send()
            .ok()
            .and_then(|r| r.json::<serde_json::Value>().ok())
            .and_then(|d| d["partitions"][partition as usize]["log_start_offset"].as_u64())
            .unwrap_or(0);
        loop {
            let r = c
                .get(format!("{leader}/v1/topics/{topic}/partitions/{partition}/batches?offset={offset}&max_bytes=4194304"))
                .send()
                .unwrap();
            if !r.status().is_success() {
                return Err(r.status());
            }
            let bytes = r.bytes().unwrap();
            if bytes.is_empty() {
                break;
            }
            for item in shared::BatchIter::new(&bytes, limits) {
                let (h, b) = item.unwrap();
                for rec in shared::DecodedRecords::new(b, &limits).unwrap().iter() {
                    let o = h.base_offset as u64 + rec.offset_delta as u64;
                    if o >= offset {
                        let headers = rec
                            .headers()
                            .map(|hd| {
                                (
                                    String::from_utf8_lossy(hd.key).into_owned(),
                                    String::from_utf8_lossy(hd.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect();
                        out.push((
                            partition,
                            o,
                            headers,
                            rec.value.unwrap_or_default().to_vec(),
                        ));
                    }
                }
                offset = h.next_offset() as u64;
            }
        }
    }
    Ok(out)
}

/// A running `collector tail` process whose stdout and stderr lines are collected.
#[derive(Debug)]
pub struct TailProc {
    pub child: Child,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The threads reading stdout and stderr: joined once the process exited, so every
    /// line it wrote is collected before anyone counts them.
    readers: Vec<std::thread::JoinHandle<()>>,
}

type Lines = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

fn collect_lines(r: impl std::io::Read + Send + 'static) -> (Lines, std::thread::JoinHandle<()>) {
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = out.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            match line {
                Ok(l) => sink.lock().unwrap().push(l),
                Err(_) => break,
            }
        }
    });
    (out, reader)
}

impl TailProc {
    /// `collector tail --collector <base> <args…>`, logging commits (debug) to stderr.
    pub fn start(base: &str, args: &[&str]) -> Self {
        let mut child = Command::new(binary("collector"))
            .arg("tail")
            .args(["--collector", base])
            .args(args)
            .env("RUST_LOG", "warn,collector::tail=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stdout, out_reader) = collect_lines(child.stdout.take().unwrap());
        let (stderr, err_reader) = collect_lines(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    /// Lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn line_count(&self) -> usize {
        self.stdout.lock().unwrap().len()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`, then waits for its output to be read to the end.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
    }

    /// SIGTERM, then the exit status (with all its output collected).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        assert_eq!(unsafe_kill(self.child.id() as i32, libc::SIGTERM), 0);
        self.wait()
    }

    /// Waits for the process to exit (at most 60 s), then for its output to be read to the
    /// end (the pipes close with the process).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                for r in self.readers.drain(..) {
                    r.join().unwrap();
                }
                return s;
            }
            assert!(Instant::now() < deadline, "tail did not exit within 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TailProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one sample in Prometheus text: the line whose name (and labels, if given
/// in `name`, e.g. `m{a="b"}`) is exactly `name`. `None` if the metric is absent.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        (n == name).then(|| v.parse().ok()).flatten()
    })
}

/// Scrapes `url` (a `/metrics` endpoint) and returns one sample, see [`metric_value`].
pub fn scrape(url: &str, name: &str) -> Option<f64> {
    let text = client().get(url).send().ok()?.text().ok()?;
    metric_value(&text, name)
}

/// Polls `f` every 50 ms until it returns `Some`, failing with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Log lines for agent tests, as stored (no newline): `{stream}-{i:06} GET /items?id={i} x…`
/// for `i` in `from..from + n`, of varied lengths.
pub fn log_lines(stream: &str, from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| format!("{stream}-{i:06} GET /items?id={i} {}", "x".repeat(i % 40)))
        .collect()
}

/// Appends each line and a newline to `path` (created if missing), in one write.
pub fn append_lines(path: &Path, lines: &[String]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut buf = String::new();
    for l in lines {
        buf.push_str(l);
        buf.push('\n');
    }
    f.write_all(buf.as_bytes()).unwrap();
}

/// Waits (at most 30 s) until the metric `name` scraped from `metrics_url` is at least
/// `at_least`.
pub fn wait_metric(metrics_url: &str, name: &str, at_least: f64) {
    wait_for(Duration::from_secs(30), name, || {
        (scrape(metrics_url, name).unwrap_or(0.0) >= at_least).then_some(())
    });
}
