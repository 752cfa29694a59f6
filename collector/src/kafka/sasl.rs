//! SASL on the Kafka listener: PLAIN and SCRAM-SHA-256/512 (RFC 5802, RFC 7677) against
//! the users file, whose entries are SCRAM salted keys (never passwords).
//!
//! Users file, one credential per line:
//! `<name> <SCRAM-SHA-256|SCRAM-SHA-512> <iterations> <salt hex> <stored key hex> <server key hex>`
//! (`collector sasl-users add NAME --file F` writes both mechanisms for a user). PLAIN checks
//! the password against the SCRAM-SHA-256 entry (or SHA-512 when that is the only one).
//!
//! Invariants: passwords and proofs are never logged or kept; keys are compared in
//! constant time; an unknown user and a wrong password fail alike.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::{digest, hmac, pbkdf2};

use crate::auth::{Principal, append_secret, check_secret_name, ct_eq, hex, random, unhex};

/// SCRAM iterations for new credentials (RFC 7677's minimum is 4096).
pub const ITERATIONS: u32 = 8192;
const SALT_BYTES: usize = 16;
const NONCE_BYTES: usize = 18;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scram {
    Sha256,
    Sha512,
}

impl Scram {
    pub fn name(self) -> &'static str {
        match self {
            Scram::Sha256 => "SCRAM-SHA-256",
            Scram::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        match s {
            "SCRAM-SHA-256" => Some(Scram::Sha256),
            "SCRAM-SHA-512" => Some(Scram::Sha512),
            _ => None,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Scram::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Scram::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Scram::Sha256 => hmac::HMAC_SHA256,
            Scram::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Scram::Sha256 => &digest::SHA256,
            Scram::Sha512 => &digest::SHA512,
        }
    }

    fn len(self) -> usize {
        match self {
            Scram::Sha256 => 32,
            Scram::Sha512 => 64,
        }
    }
}

/// The mechanisms offered, in SaslHandshake's list.
pub const MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

#[derive(Debug, Clone)]
pub struct Credential {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

fn hmac_sign(alg: hmac::Algorithm, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(alg, key), data)
        .as_ref()
        .to_vec()
}

fn salted_password(m: Scram, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; m.len()];
    let n = std::num::NonZeroU32::new(iterations.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    pbkdf2::derive(m.pbkdf2(), n, salt, password, &mut out);
    out
}

fn keys(m: Scram, password: &[u8], salt: &[u8], iterations: u32) -> (Vec<u8>, Vec<u8>) {
    let salted = salted_password(m, password, salt, iterations);
    let client_key = hmac_sign(m.hmac(), &salted, b"Client Key");
    let stored = digest::digest(m.digest(), &client_key).as_ref().to_vec();
    let server = hmac_sign(m.hmac(), &salted, b"Server Key");
    (stored, server)
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", .path.display())]
pub struct UsersFileError {
    pub path: PathBuf,
    pub message: String,
}

/// The SASL users a node accepts (reloaded on SIGHUP).
#[derive(Debug)]
pub struct SaslUsers {
    path: PathBuf,
    entries: RwLock<HashMap<(String, Scram), Credential>>,
    /// Keys the decoy salts of unknown users (random per process).
    decoy_key: Vec<u8>,
}

impl SaslUsers {
    pub fn load(path: &Path) -> Result<Self, UsersFileError> {
        let u = Self {
            path: path.to_owned(),
            entries: RwLock::new(HashMap::new()),
            decoy_key: random(32).map_err(|message| UsersFileError {
                path: path.to_owned(),
                message,
            })?,
        };
        u.reload()?;
        Ok(u)
    }

    /// Reads the file again; keeps the old entries when it does not parse.
    pub fn reload(&self) -> Result<usize, UsersFileError> {
        let err = |message: String| UsersFileError {
            path: self.path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&self.path).map_err(|e| err(e.to_string()))?;
        let mut entries = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            let bad = || {
                err(format!(
                    "line {}: expected `<name> <mechanism> <iterations> <salt hex> <stored key hex> <server key hex>`",
                    i + 1
                ))
            };
            let [name, mech, iterations, salt, stored, server] = f[..] else {
                return Err(bad());
            };
            let (Some(m), Ok(iterations), Some(salt), Some(stored_key), Some(server_key)) = (
                Scram::from_name(mech),
                iterations.parse::<u32>(),
                unhex(salt),
                unhex(stored),
                unhex(server),
            ) else {
                return Err(bad());
            };
            if stored_key.len() != m.len() || server_key.len() != m.len() || iterations < 4096 {
                return Err(bad());
            }
            entries.insert(
                (name.to_owned(), m),
                Credential {
                    iterations,
                    salt,
                    stored_key,
                    server_key,
                },
            );
        }
        let n = entries.len();
        *self.entries.write().unwrap_or_else(|p| p.into_inner()) = entries;
        Ok(n)
    }

    /// A stable made-up credential for a user the file does not have (its salt is a keyed
    /// hash of the name, so it does not change between attempts), matching no password.
    fn decoy(&self, name: &str, m: Scram) -> Credential {
        let tag = hmac_sign(
            hmac::HMAC_SHA256,
            &self.decoy_key,
            format!("{name}\0{}", m.name()).as_bytes(),
        );
        Credential {
            iterations: ITERATIONS,
            salt: tag[..SALT_BYTES].to_vec(),
            stored_key: vec![0; m.len()],
            server_key: vec![0; m.len()],
        }
    }

    fn get(&self, name: &str, m: Scram) -> Option<Credential> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(name.to_owned(), m))
            .cloned()
    }
}

/// `collector sasl-users add`: appends SCRAM-SHA-256 and SCRAM-SHA-512 credentials for
/// `name` (salted keys, never the password) to `file` (created 0600 if missing).
pub fn add_user(file: &Path, name: &str, password: &str) -> Result<(), String> {
    check_secret_name(name)?;
    if password.len() < 8 {
        return Err("the password must have at least 8 characters".into());
    }
    let mut lines = String::new();
    for m in [Scram::Sha256, Scram::Sha512] {
        let salt = random(SALT_BYTES)?;
        let (stored, server) = keys(m, password.as_bytes(), &salt, ITERATIONS);
        lines.push_str(&format!(
            "{name} {} {ITERATIONS} {} {} {}\n",
            m.name(),
            hex(&salt),
            hex(&stored),
            hex(&server)
        ));
    }
    append_secret(file, &lines)
}

/// One connection's SASL exchange.
#[derive(Debug, Default)]
pub enum Exchange {
    /// No handshake yet.
    #[default]
    Start,
    /// A mechanism was chosen by SaslHandshake.
    Chosen(Mechanism),
    /// SCRAM: the server-first message was sent.
    ScramSent {
        m: Scram,
        user: String,
        nonce: String,
        /// The gs2 header of client-first, which client-final's `c=` must repeat.
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        credential: Option<Credential>,
    },
    /// Authenticated (a connection authenticates once).
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(Scram),
}

impl Mechanism {
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "PLAIN" => Some(Mechanism::Plain),
            other => Scram::from_name(other).map(Mechanism::Scram),
        }
    }
}

/// One SaslAuthenticate step's outcome.
#[derive(Debug)]
pub enum Step {
    /// Send these bytes and wait for the next step.
    Continue(Vec<u8>),
    /// Authenticated: send these bytes (SCRAM's server-final), the connection is `principal`.
    Authenticated(Vec<u8>, Principal),
}

/// Why authentication failed. The message is what the client is told: it never says
/// whether the user exists.
#[derive(Debug, thiserror::Error)]
pub enum SaslError {
    #[error("authentication failed: invalid credentials")]
    BadCredentials,
    #[error("authentication failed: {0}")]
    Malformed(&'static str),
    #[error("SaslAuthenticate out of order: {0}")]
    IllegalState(&'static str),
}

/// SASLname: `=2C` is `,` and `=3D` is `=`.
fn sasl_name(s: &str) -> String {
    s.replace("=2C", ",").replace("=3D", "=")
}

fn attr(msg: &str, key: char) -> Option<&str> {
    msg.split(',')
        .find_map(|p| p.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

impl Exchange {
    /// Processes one SaslAuthenticate message.
    pub fn step(&mut self, users: &SaslUsers, bytes: &[u8]) -> Result<Step, SaslError> {
        match std::mem::take(self) {
            Exchange::Start => Err(SaslError::IllegalState("no SaslHandshake first")),
            Exchange::Done => Err(SaslError::IllegalState("already authenticated")),
            Exchange::Chosen(Mechanism::Plain) => {
                let mut parts = bytes.split(|b| *b == 0);
                let (Some(authzid), Some(user), Some(password), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(SaslError::Malformed(
                        "PLAIN is authzid NUL user NUL password",
                    ));
                };
                // Acting for someone else is not supported.
                if !authzid.is_empty() && authzid != user {
                    return Err(SaslError::BadCredentials);
                }
                let user = std::str::from_utf8(user).map_err(|_| SaslError::BadCredentials)?;
                let cred = users
                    .get(user, Scram::Sha256)
                    .map(|c| (Scram::Sha256, c))
                    .or_else(|| users.get(user, Scram::Sha512).map(|c| (Scram::Sha512, c)));
                // An unknown user costs the same hashing as a known one.
                let known = cred.is_some();
                let (m, c) =
                    cred.unwrap_or_else(|| (Scram::Sha256, users.decoy(user, Scram::Sha256)));
                let (stored, _) = keys(m, password, &c.salt, c.iterations);
                if !known || !ct_eq(&stored, &c.stored_key) {
                    return Err(SaslError::BadCredentials);
                }
                *self = Exchange::Done;
                Ok(Step::Authenticated(Vec::new(), Principal::user(user)))
            }
            Exchange::Chosen(Mechanism::Scram(m)) => {
                let msg = std::str::from_utf8(bytes)
                    .map_err(|_| SaslError::Malformed("client-first is not UTF-8"))?;
                // gs2-header: "n,," or "y,," (no channel binding), optionally "a=authzid".
                let mut it = msg.splitn(3, ',');
                let (Some(cb), Some(_authz), Some(bare)) = (it.next(), it.next(), it.next()) else {
                    return Err(SaslError::Malformed("client-first message"));
                };
                if cb != "n" && cb != "y" {
                    return Err(SaslError::Malformed("channel binding is not supported"));
                }
                let gs2_header = msg[..msg.len() - bare.len()].to_owned();
                let (Some(user), Some(cnonce)) = (attr(bare, 'n'), attr(bare, 'r')) else {
                    return Err(SaslError::Malformed("client-first needs n= and r="));
                };
                let user = sasl_name(user);
                let credential = users.get(&user, m);
                // An unknown user still gets a server-first (with a random salt), so the
                // reply does not say whether the user exists.
                // An unknown user gets the same salt every time, like a known one.
                let (salt, iterations) = match &credential {
                    Some(c) => (c.salt.clone(), c.iterations),
                    None => {
                        let d = users.decoy(&user, m);
                        (d.salt, d.iterations)
                    }
                };
                let snonce =
                    B64.encode(random(NONCE_BYTES).map_err(|_| SaslError::BadCredentials)?);
                let nonce = format!("{cnonce}{snonce}");
                let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
                *self = Exchange::ScramSent {
                    m,
                    user,
                    nonce,
                    gs2_header,
                    client_first_bare: bare.to_owned(),
                    server_first: server_first.clone(),
                    credential,
                };
                Ok(Step::Continue(server_first.into_bytes()))
            }
            Exchange::ScramSent {
                m,
                user,
                nonce,
                gs2_header,
                client_first_bare,
                server_first,
                credential,
            } => {
                let msg = std::str::from_utf8(bytes)
                    .map_err(|_| SaslError::Malformed("client-final is not UTF-8"))?;
                let Some((without_proof, proof)) = msg.rsplit_once(",p=") else {
                    return Err(SaslError::Malformed("client-final needs p="));
                };
                if attr(without_proof, 'r') != Some(nonce.as_str()) {
                    return Err(SaslError::Malformed("nonce mismatch"));
                }
                let binding = attr(without_proof, 'c').and_then(|c| B64.decode(c).ok());
                if binding.as_deref() != Some(gs2_header.as_bytes()) {
                    return Err(SaslError::Malformed(
                        "channel binding does not repeat the gs2 header",
                    ));
                }
                let proof = B64
                    .decode(proof)
                    .map_err(|_| SaslError::Malformed("proof is not base64"))?;
                let Some(c) = credential else {
                    return Err(SaslError::BadCredentials);
                };
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let client_signature = hmac_sign(m.hmac(), &c.stored_key, auth_message.as_bytes());
                if proof.len() != client_signature.len() {
                    return Err(SaslError::BadCredentials);
                }
                let client_key: Vec<u8> = proof
                    .iter()
                    .zip(&client_signature)
                    .map(|(a, b)| a ^ b)
                    .collect();
                let stored = digest::digest(m.digest(), &client_key);
                if !ct_eq(stored.as_ref(), &c.stored_key) {
                    return Err(SaslError::BadCredentials);
                }
                let server_signature = hmac_sign(m.hmac(), &c.server_key, auth_message.as_bytes());
                *self = Exchange::Done;
                Ok(Step::Authenticated(
                    format!("v={}", B64.encode(server_signature)).into_bytes(),
                    Principal::user(&user),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SCRAM client, by the RFC, to drive the server side.
    fn client_final(
        m: Scram,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> String {
        let nonce = attr(server_first, 'r').unwrap();
        let salt = B64.decode(attr(server_first, 's').unwrap()).unwrap();
        let iterations: u32 = attr(server_first, 'i').unwrap().parse().unwrap();
        let salted = salted_password(m, password.as_bytes(), &salt, iterations);
        let client_key = hmac_sign(m.hmac(), &salted, b"Client Key");
        let stored = digest::digest(m.digest(), &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = hmac_sign(m.hmac(), stored.as_ref(), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn scram_and_plain_accept_the_password_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("users");
        add_user(&f, "alice", "correct horse").unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains("correct horse"));
        let users = SaslUsers::load(&f).unwrap();
        for m in [Scram::Sha256, Scram::Sha512] {
            for (password, ok) in [("correct horse", true), ("wrong horse", false)] {
                let mut x = Exchange::Chosen(Mechanism::Scram(m));
                let bare = "n=alice,r=abcdef";
                let Step::Continue(sf) = x.step(&users, format!("n,,{bare}").as_bytes()).unwrap()
                else {
                    panic!("server-first expected")
                };
                let sf = String::from_utf8(sf).unwrap();
                let cf = client_final(m, password, bare, &sf);
                match x.step(&users, cf.as_bytes()) {
                    Ok(Step::Authenticated(v, p)) => {
                        assert!(ok);
                        assert!(v.starts_with(b"v="));
                        assert_eq!(p, Principal::user("alice"));
                    }
                    Err(SaslError::BadCredentials) => assert!(!ok),
                    other => panic!("{other:?}"),
                }
            }
        }
        let mut x = Exchange::Chosen(Mechanism::Plain);
        assert!(matches!(
            x.step(&users, b"\0alice\0correct horse"),
            Ok(Step::Authenticated(_, _))
        ));
        let mut x = Exchange::Chosen(Mechanism::Plain);
        assert!(matches!(
            x.step(&users, b"\0alice\0nope"),
            Err(SaslError::BadCredentials)
        ));
        let mut x = Exchange::Chosen(Mechanism::Plain);
        assert!(matches!(
            x.step(&users, b"\0bob\0correct horse"),
            Err(SaslError::BadCredentials)
        ));
        // An unknown user gets a server-first like anyone, then fails.
        let mut x = Exchange::Chosen(Mechanism::Scram(Scram::Sha256));
        assert!(matches!(
            x.step(&users, b"n,,n=bob,r=xyz"),
            Ok(Step::Continue(_))
        ));
    }
}
