//! Network faults between cluster nodes, without kernel modules or root: every connection
//! from node A to node B goes through a TCP relay owned by the test (A's `dial_overrides`
//! send it there), and the relay obeys the state of the directed link A→B for the bytes A
//! sends and of B→A for the bytes B answers.
//!
//! - **Blocked**: bytes in that direction are held, not dropped. The relay stops reading, so
//!   TCP's own flow control stalls the sender, as a real partition does while TCP
//!   retransmits. When the link heals, the held bytes arrive (a late request the sender may
//!   have given up on, as in a real network).
//! - **Slow**: each chunk waits before it is passed on (a slow link; `tc netem` is not
//!   available on these machines).
//!
//! A one-way block A→B lets B's requests reach A but holds A's replies: the request is
//! served and its answer lost, the way a one-way loss looks to TCP's peers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What a directed link does to the bytes sent over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Open,
    Blocked,
    /// Each chunk is held this long first.
    Slow(Duration),
}

#[derive(Debug)]
struct Link {
    state: Mutex<LinkState>,
    changed: Condvar,
}

impl Link {
    /// Waits until bytes may pass (or the network is torn down); returns the delay to add.
    fn pass(&self, stop: &AtomicBool) -> Option<Duration> {
        let mut s = self.state.lock().unwrap();
        loop {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            match *s {
                LinkState::Open => return Some(Duration::ZERO),
                LinkState::Slow(d) => return Some(d),
                LinkState::Blocked => {
                    s = self
                        .changed
                        .wait_timeout(s, Duration::from_millis(200))
                        .unwrap()
                        .0;
                }
            }
        }
    }
}

/// The relays between `n` nodes, node ids 1..=n.
#[derive(Debug)]
pub struct Net {
    links: BTreeMap<(u64, u64), Arc<Link>>,
    /// `(from, to)` → the relay address `from` dials to reach `to`.
    relays: BTreeMap<(u64, u64), String>,
    stop: Arc<AtomicBool>,
}

/// How long a relay waits on a socket before looking at the stop flag again.
const POLL: Duration = Duration::from_millis(200);

impl Net {
    /// Relays for every ordered pair of nodes; `ports[i]` is node `i + 1`'s HTTP port.
    pub fn new(ports: &[u16]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut links = BTreeMap::new();
        for a in 1..=ports.len() as u64 {
            for b in 1..=ports.len() as u64 {
                if a != b {
                    links.insert(
                        (a, b),
                        Arc::new(Link {
                            state: Mutex::new(LinkState::Open),
                            changed: Condvar::new(),
                        }),
                    );
                }
            }
        }
        let mut relays = BTreeMap::new();
        for (&(a, b), forward) in &links {
            let back = links[&(b, a)].clone();
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            relays.insert((a, b), listener.local_addr().unwrap().to_string());
            let target = format!("127.0.0.1:{}", ports[(b - 1) as usize]);
            let (forward, stop) = (forward.clone(), stop.clone());
            std::thread::spawn(move || serve(listener, target, forward, back, stop));
        }
        Self {
            links,
            relays,
            stop,
        }
    }

    /// The YAML `dial_overrides` for node `from` (`ports` as given to [`Net::new`]).
    pub fn dial_overrides_yaml(&self, from: u64, ports: &[u16]) -> String {
        let mut y = String::from("dial_overrides:\n");
        for (&(a, b), relay) in &self.relays {
            if a == from {
                let port = ports[(b - 1) as usize];
                y.push_str(&format!("  \"127.0.0.1:{port}\": \"{relay}\"\n"));
            }
        }
        y
    }

    /// Sets the directed link `from` → `to`.
    pub fn set(&self, from: u64, to: u64, state: LinkState) {
        let l = &self.links[&(from, to)];
        *l.state.lock().unwrap() = state;
        l.changed.notify_all();
    }

    /// Every link open again.
    pub fn heal(&self) {
        for &(a, b) in self.links.keys() {
            self.set(a, b, LinkState::Open);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for l in self.links.values() {
            l.changed.notify_all();
        }
        // Wake each relay's accept so it sees the flag.
        for r in self.relays.values() {
            let _ = TcpStream::connect(r);
        }
    }
}

fn serve(
    listener: TcpListener,
    target: String,
    forward: Arc<Link>,
    back: Arc<Link>,
    stop: Arc<AtomicBool>,
) {
    for client in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(addr) = target.parse() else { return };
        // A node that is down refuses: the caller sees its connection closed.
        let Ok(server) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            continue;
        };
        for s in [&client, &server] {
            let _ = s.set_nodelay(true);
            let _ = s.set_read_timeout(Some(POLL));
        }
        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let (f, b, st, st2) = (forward.clone(), back.clone(), stop.clone(), stop.clone());
        std::thread::spawn(move || pump(client, server, &f, &st));
        std::thread::spawn(move || pump(s2, c2, &b, &st2));
    }
}

/// Copies `from` → `to` through `link` until either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream, link: &Link, stop: &AtomicBool) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                continue;
            }
            Err(_) => break,
        };
        let Some(delay) = link.pass(stop) else { break };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
