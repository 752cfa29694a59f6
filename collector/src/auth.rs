//! Who is asking, and whether they may: principals (from a verified client certificate or a
//! bearer token), the token file, and the authorizer (Kafka's ACL model over the ACLs kept in
//! the Raft metadata).
//!
//! Invariants: tokens exist only as salted SHA-256 hashes on disk and in memory, compared in
//! constant time; no token, hash or salt is ever logged or put in an error message. With
//! `authorization: acls` a request is allowed only by a matching ALLOW and no matching DENY
//! (superusers and brokers excepted); with `authorization: none` everything is allowed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use api::acls::{Acl, Operation, PatternType, Permission, ResourceType};
use serde::Deserialize;

/// An authenticated identity: `User:<name>`, `broker:<id>`, or `User:ANONYMOUS`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal(String);

pub const ANONYMOUS: &str = "User:ANONYMOUS";

impl Principal {
    pub fn user(name: &str) -> Self {
        Self(format!("User:{name}"))
    }

    pub fn broker(id: u64) -> Self {
        Self(format!("broker:{id}"))
    }

    pub fn anonymous() -> Self {
        Self(ANONYMOUS.into())
    }

    /// From a certificate's name: `broker:<id>` names a broker, anything else a user.
    pub fn from_certificate_name(name: &str) -> Self {
        match name.strip_prefix("broker:") {
            Some(id) if id.parse::<u64>().is_ok() => Self(name.to_owned()),
            _ => Self::user(name),
        }
    }

    pub fn is_broker(&self) -> bool {
        self.0.starts_with("broker:")
    }

    pub fn is_anonymous(&self) -> bool {
        self.0 == ANONYMOUS
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who is calling a service: the principal and the client's address.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The client's IP address (ACLs may name it).
    pub host: String,
}

/// Which part of a client certificate names its principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateName {
    /// The subject's common name.
    #[default]
    Cn,
    /// The first subject alternative name (DNS name, e-mail or URI).
    San,
}

/// The principal a verified client certificate (DER) proves, by `rule`.
pub fn certificate_principal(der: &[u8], rule: CertificateName) -> Option<Principal> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    // A broker is named by its certificate's CN (`broker:<id>`), whatever the rule for
    // users; nothing else can make a principal a broker.
    if let Some(b) = cn.as_deref().map(Principal::from_certificate_name)
        && b.is_broker()
    {
        return Some(b);
    }
    let name = match rule {
        CertificateName::Cn => cn,
        CertificateName::San => cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|g| match g {
                    x509_parser::extensions::GeneralName::DNSName(s)
                    | x509_parser::extensions::GeneralName::RFC822Name(s)
                    | x509_parser::extensions::GeneralName::URI(s) => Some((*s).to_owned()),
                    _ => None,
                })
            }),
    }?;
    (!name.is_empty()).then(|| Principal::user(&name))
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{}: {message}", .path.display())]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// One line of the token file: `<name> <salt hex> <sha256(salt || token) hex>`.
#[derive(Debug, Clone)]
struct TokenEntry {
    name: String,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

/// Prefix of every token (so a leaked one is recognisable by scanners).
const TOKEN_PREFIX: &str = "trb_";
const TOKEN_BYTES: usize = 32;
const SALT_BYTES: usize = 16;

fn hash(salt: &[u8], token: &str) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(salt);
    ctx.update(token.as_bytes());
    ctx.finish().as_ref().to_vec()
}

// Helpers shared with the SASL users file (`kafka::sasl`): the same encoding, names,
// randomness, comparison and file handling for every secret store.

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `n` bytes from the system's secure random source.
pub(crate) fn random(n: usize) -> Result<Vec<u8>, String> {
    let mut v = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut v)
        .map_err(|_| "no system randomness".to_owned())?;
    Ok(v)
}

/// Compares secrets (hashes, keys) in constant time.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(a, b))
}

/// A name for a token or SASL user: letters, digits and `- _ . @` (never `:`, so it cannot
/// look like another principal kind).
pub(crate) fn check_secret_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(format!("{name:?}: names use letters, digits and - _ . @"));
    }
    Ok(())
}

/// Appends `text` to a secrets file, created owner-readable only (0600), and fsyncs it.
pub(crate) fn append_secret(file: &Path, text: &str) -> Result<(), String> {
    let mut o = std::fs::OpenOptions::new();
    o.append(true).create(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(file)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .map_err(|e| format!("{}: {e}", file.display()))
}

fn parse_tokens(path: &Path, text: &str) -> Result<Vec<TokenEntry>, TokenError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || TokenError::File {
            path: path.to_owned(),
            message: format!("line {}: expected `<name> <salt hex> <hash hex>`", i + 1),
        };
        let mut parts = line.split_whitespace();
        let (Some(name), Some(salt), Some(h), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let (Some(salt), Some(hash)) = (unhex(salt), unhex(h)) else {
            return Err(bad());
        };
        if hash.len() != 32 {
            return Err(bad());
        }
        out.push(TokenEntry {
            name: name.to_owned(),
            salt,
            hash,
        });
    }
    Ok(out)
}

/// The bearer tokens a node accepts, from the token file (reloaded on SIGHUP).
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    entries: RwLock<Vec<TokenEntry>>,
}

impl TokenStore {
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let s = Self {
            path: path.to_owned(),
            entries: RwLock::new(Vec::new()),
        };
        s.reload()?;
        Ok(s)
    }

    /// Reads the file again; keeps the old entries when it does not parse.
    pub fn reload(&self) -> Result<usize, TokenError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| TokenError::File {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let entries = parse_tokens(&self.path, &text)?;
        let n = entries.len();
        *self.entries.write().unwrap_or_else(|p| p.into_inner()) = entries;
        Ok(n)
    }

    /// The principal a token proves, if it is one of the file's. Every entry is checked
    /// (constant-time comparison), so timing says nothing about which or how many matched.
    pub fn verify(&self, token: &str) -> Option<Principal> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for e in entries.iter() {
            let h = hash(&e.salt, token);
            if ct_eq(&h, &e.hash) {
                // Always a user: a token never makes its holder a broker.
                found = Some(Principal::user(&e.name));
            }
        }
        found
    }
}

/// `collector tokens create NAME`: a new random token for NAME; its salted hash is
/// appended to `file` (created 0600 if missing). Returns the token, to be shown once.
pub fn create_token(file: &Path, name: &str) -> Result<String, TokenError> {
    check_secret_name(name).map_err(TokenError::Invalid)?;
    let raw = random(TOKEN_BYTES).map_err(TokenError::Invalid)?;
    let salt = random(SALT_BYTES).map_err(TokenError::Invalid)?;
    let token = format!("{TOKEN_PREFIX}{}", hex(&raw));
    let line = format!("{name} {} {}\n", hex(&salt), hex(&hash(&salt, &token)));
    append_secret(file, &line).map_err(TokenError::Invalid)?;
    Ok(token)
}

/// `authorization:` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every authenticated (or anonymous) caller may do everything.
    #[default]
    None,
    /// Kafka's ACL model; a caller with no matching ALLOW is refused.
    Acls,
}

/// A refused request: who asked for what.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{principal} may not {operation:?} {resource_type:?} {resource_name:?}")]
pub struct Denied {
    pub principal: String,
    pub operation: Operation,
    pub resource_type: ResourceType,
    pub resource_name: String,
}

/// Decides requests against the ACLs.
#[derive(Debug, Clone)]
pub struct Authorizer {
    pub mode: Mode,
    pub superusers: Vec<Principal>,
}

impl Authorizer {
    pub fn allow_all() -> Self {
        Self {
            mode: Mode::None,
            superusers: Vec::new(),
        }
    }

    /// Whether ACLs are enforced.
    pub fn enforcing(&self) -> bool {
        self.mode == Mode::Acls
    }

    /// Allowed when: no enforcement; a superuser or a broker; or some ALLOW ACL matches
    /// and no DENY does (DENY wins).
    pub fn check(
        &self,
        acls: &[Acl],
        caller: &Caller,
        operation: Operation,
        resource_type: ResourceType,
        resource_name: &str,
    ) -> Result<(), Denied> {
        if self.mode == Mode::None
            || caller.principal.is_broker()
            || self.superusers.contains(&caller.principal)
        {
            return Ok(());
        }
        let mut allowed = false;
        for a in acls {
            if a.resource_type != resource_type
                || !a.principal_matches(caller)
                || !host_matches(&a.host, &caller.host)
                || !name_matches(a, resource_name)
            {
                continue;
            }
            match a.permission {
                // A DENY of exactly this operation, or of ALL.
                Permission::Deny if a.operation == operation || a.operation == Operation::All => {
                    return Err(self.denied(caller, operation, resource_type, resource_name));
                }
                Permission::Allow if a.operation.covers(operation) => allowed = true,
                _ => {}
            }
        }
        if allowed {
            Ok(())
        } else {
            Err(self.denied(caller, operation, resource_type, resource_name))
        }
    }

    fn denied(
        &self,
        caller: &Caller,
        operation: Operation,
        resource_type: ResourceType,
        resource_name: &str,
    ) -> Denied {
        Denied {
            principal: caller.principal.to_string(),
            operation,
            resource_type,
            resource_name: resource_name.to_owned(),
        }
    }
}

/// Why a request's credentials were refused (401). Says nothing about the token itself.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unauthenticated {
    #[error("the bearer token is not valid")]
    BadToken,
    #[error("no credentials: a client certificate or a bearer token is required")]
    Missing,
}

/// Authentication and authorization settings of a node, shared by both front ends and
/// the services.
#[derive(Debug)]
pub struct Security {
    pub authorizer: Authorizer,
    pub tokens: Option<TokenStore>,
    pub certificate_name: CertificateName,
    /// `/internal` routes accept only broker principals (brokers can prove who they are:
    /// the listener asks for client certificates).
    pub internal_brokers_only: bool,
}

impl Security {
    /// Everything allowed, nobody asked for credentials (tests of services).
    pub fn open() -> Self {
        Self {
            authorizer: Authorizer::allow_all(),
            tokens: None,
            certificate_name: CertificateName::Cn,
            internal_brokers_only: false,
        }
    }

    pub fn from_config(c: &crate::config::Config) -> Result<Self, TokenError> {
        let tokens = match &c.tokens_file {
            Some(f) => Some(TokenStore::load(f)?),
            None => None,
        };
        Ok(Self {
            authorizer: Authorizer {
                mode: c.authorization,
                superusers: c.superusers.iter().map(|s| Principal(s.clone())).collect(),
            },
            tokens,
            certificate_name: c.principal_from_certificate,
            internal_brokers_only: c
                .tls
                .as_ref()
                .is_some_and(|t| t.client_auth != crate::server::tls::ClientAuth::None),
        })
    }

    /// The principal of a request: its bearer token when it has one (a bad one is
    /// refused), else its verified client certificate, else anonymous — refused when ACLs
    /// are enforced.
    pub fn authenticate(
        &self,
        bearer: Option<&str>,
        certificate: Option<&[u8]>,
    ) -> Result<Principal, Unauthenticated> {
        if let Some(token) = bearer {
            return self
                .tokens
                .as_ref()
                .and_then(|t| t.verify(token))
                .ok_or(Unauthenticated::BadToken);
        }
        if let Some(p) = certificate.and_then(|c| certificate_principal(c, self.certificate_name)) {
            return Ok(p);
        }
        if self.authorizer.enforcing() {
            return Err(Unauthenticated::Missing);
        }
        Ok(Principal::anonymous())
    }
}

/// Whether an ACL's principal names `caller` (`User:*`: every authenticated user).
trait PrincipalMatch {
    fn principal_matches(&self, caller: &Caller) -> bool;
}

impl PrincipalMatch for Acl {
    fn principal_matches(&self, caller: &Caller) -> bool {
        self.principal == caller.principal.as_str()
            || (self.principal == "User:*"
                && !caller.principal.is_anonymous()
                && !caller.principal.is_broker())
    }
}

/// An IP in its canonical form (IPv4-mapped IPv6 as IPv4), for comparing hosts.
pub fn canonical_host(host: &str) -> String {
    host.parse::<std::net::IpAddr>()
        .map_or_else(|_| host.to_owned(), |ip| ip.to_canonical().to_string())
}

fn host_matches(acl_host: &str, caller_host: &str) -> bool {
    acl_host == "*" || canonical_host(acl_host) == canonical_host(caller_host)
}

/// Whether `acl` (an ALLOW or DENY) applies to `caller` on a topic named `topic`.
pub fn applies(acl: &Acl, caller: &Caller, resource_type: ResourceType, name: &str) -> bool {
    acl.resource_type == resource_type
        && acl.principal_matches(caller)
        && host_matches(&acl.host, &caller.host)
        && name_matches(acl, name)
}

/// Whether any ACL applies to `caller` for some resource of a type with this operation
/// and permission, whatever its name (Kafka's "WRITE on any topic" for idempotence).
pub fn any_applies(
    acls: &[Acl],
    caller: &Caller,
    resource_type: ResourceType,
    permission: Permission,
    covers: impl Fn(Operation) -> bool,
) -> bool {
    acls.iter().any(|a| {
        a.resource_type == resource_type
            && a.permission == permission
            && covers(a.operation)
            && a.principal_matches(caller)
            && host_matches(&a.host, &caller.host)
    })
}

fn name_matches(a: &Acl, name: &str) -> bool {
    match a.pattern_type {
        PatternType::Literal => a.resource_name == "*" || a.resource_name == name,
        PatternType::Prefixed => name.starts_with(&a.resource_name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        principal: &str,
        rt: ResourceType,
        name: &str,
        pt: PatternType,
        op: Operation,
        p: Permission,
    ) -> Acl {
        Acl {
            principal: principal.into(),
            host: "*".into(),
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pt,
            operation: op,
            permission: p,
        }
    }

    fn caller(p: &str) -> Caller {
        Caller {
            principal: Principal::from_certificate_name(p),
            host: "10.0.0.1".into(),
        }
    }

    #[test]
    fn deny_wins_prefixed_matches_and_read_implies_describe() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let a = Authorizer {
            mode: Mode::Acls,
            superusers: vec![Principal::user("root")],
        };
        let acls = vec![
            acl("User:alice", Topic, "logs-", Prefixed, Write, Allow),
            acl("User:alice", Topic, "logs-secret", Literal, All, Deny),
            acl("User:bob", Topic, "*", Literal, Read, Allow),
        ];
        assert!(
            a.check(&acls, &caller("alice"), Write, Topic, "logs-web")
                .is_ok()
        );
        assert!(
            a.check(&acls, &caller("alice"), Describe, Topic, "logs-web")
                .is_ok()
        );
        assert!(
            a.check(&acls, &caller("alice"), Read, Topic, "logs-web")
                .is_err()
        );
        assert!(
            a.check(&acls, &caller("alice"), Write, Topic, "logs-secret")
                .is_err()
        );
        assert!(
            a.check(&acls, &caller("alice"), Write, Topic, "other")
                .is_err()
        );
        assert!(
            a.check(&acls, &caller("bob"), Read, Topic, "anything")
                .is_ok()
        );
        assert!(
            a.check(&acls, &caller("bob"), Write, Topic, "anything")
                .is_err()
        );
        assert!(
            a.check(&acls, &caller("root"), Delete, Cluster, "kafka-cluster")
                .is_ok()
        );
        assert!(
            a.check(&acls, &caller("broker:2"), Write, Topic, "x")
                .is_ok()
        );
        let e = a
            .check(&acls, &caller("carol"), Read, Group, "g")
            .unwrap_err();
        assert_eq!(e.to_string(), "User:carol may not Read Group \"g\"");
        assert!(
            Authorizer::allow_all()
                .check(&[], &caller("carol"), Read, Group, "g")
                .is_ok()
        );
        // Hosts compare as addresses: an IPv4-mapped caller matches the IPv4 ACL.
        let mut host_acl = acl("User:dave", Topic, "x", Literal, Read, Allow);
        host_acl.host = "10.0.0.7".into();
        let dave = |host: &str| Caller {
            principal: Principal::user("dave"),
            host: host.into(),
        };
        let one = std::slice::from_ref(&host_acl);
        assert!(
            a.check(one, &dave("::ffff:10.0.0.7"), Read, Topic, "x")
                .is_ok()
        );
        assert!(a.check(one, &dave("10.0.0.8"), Read, Topic, "x").is_err());
        // User:* is every authenticated user, not anonymous callers.
        let everyone = vec![acl("User:*", Topic, "x", Literal, Read, Allow)];
        assert!(
            a.check(&everyone, &caller("erin"), Read, Topic, "x")
                .is_ok()
        );
        let anon = Caller {
            principal: Principal::anonymous(),
            host: "10.0.0.1".into(),
        };
        assert!(a.check(&everyone, &anon, Read, Topic, "x").is_err());
    }

    #[test]
    fn tokens_verify_only_as_created_and_the_file_holds_no_token() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("tokens");
        let t1 = create_token(&f, "agent-web").unwrap();
        let t2 = create_token(&f, "tail").unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains(&t1[TOKEN_PREFIX.len()..]) && !text.contains(&t2[TOKEN_PREFIX.len()..])
        );
        let s = TokenStore::load(&f).unwrap();
        assert_eq!(s.verify(&t1), Some(Principal::user("agent-web")));
        assert_eq!(s.verify(&t2), Some(Principal::user("tail")));
        assert_eq!(s.verify("trb_00"), None);
        assert_eq!(s.verify(&t1[..t1.len() - 1]), None);
        assert!(create_token(&f, "bad name").is_err());
        // A token never proves a broker, whatever its line says.
        assert!(create_token(&f, "broker:1").is_err());
        let forged = d.path().join("forged");
        let first = text.lines().next().unwrap();
        std::fs::write(
            &forged,
            format!("broker:1 {}\n", first.split_once(' ').unwrap().1),
        )
        .unwrap();
        let forged = TokenStore::load(&forged).unwrap();
        let p = forged.verify(&t1).unwrap();
        assert!(!p.is_broker(), "{p}");
    }
}
