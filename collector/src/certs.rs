//! `collector certs init|issue`: a development CA and certificates, to try TLS in one
//! command. Not a production CA: the CA key sits in a plain file next to the certificates.
//!
//! `init --dir D --hosts h1,h2,h3` writes:
//! - `ca.pem`, `ca-key.pem`: the CA;
//! - `node<i>.pem`, `node<i>-key.pem` for the i-th host (1-based, node id i): subject
//!   `CN=broker:<i>`, names the host plus `localhost`, `127.0.0.1` and `::1`; usable as a
//!   server and as a client (brokers call each other);
//! - `<name>.pem`, `<name>-key.pem` for each `--clients` name (default `client`): subject
//!   `CN=<name>`, client use only.
//!
//! `issue --dir D --name N` signs one more client certificate with that CA.
//!
//! Invariant: never overwrites a file; keys are written owner-readable only.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{}: {message}", .path.display())]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("generating: {0}")]
    Generate(#[from] rcgen::Error),
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> CertsError {
    CertsError::File {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Validity of issued certificates: from a day ago (clock skew) for `days` days; a
/// negative `days` makes one that expired `-days` days ago (to try refusals).
fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    if days >= 0 {
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(days);
    } else {
        params.not_before = now + time::Duration::days(days - 1);
        params.not_after = now + time::Duration::days(days);
    }
}

fn subject(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Tributary development");
    dn.push(DnType::CommonName, cn);
    dn
}

/// Writes a new file (refusing to replace one); `secret` files are mode 0600.
fn write_new(path: &Path, text: &str, secret: bool) -> Result<(), CertsError> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    if secret {
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    }
    let mut f = o.open(path).map_err(|e| file_error(path, e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| file_error(path, e))
}

fn check_free(paths: &[PathBuf]) -> Result<(), CertsError> {
    for p in paths {
        if p.exists() {
            return Err(file_error(
                p,
                "exists; certs never overwrites (use another --dir)",
            ));
        }
    }
    Ok(())
}

fn valid_name(name: &str) -> Result<(), CertsError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(CertsError::Invalid(format!(
            "{name:?}: names use letters, digits, '-', '_' and '.'"
        )));
    }
    Ok(())
}

fn sign_leaf(
    cn: &str,
    sans: Vec<SanType>,
    server: bool,
    days: i64,
    ca: &Issuer<'_, KeyPair>,
) -> Result<(String, String), CertsError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(cn);
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = if server {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn host_names(host: &str) -> Result<Vec<SanType>, CertsError> {
    let mut names = Vec::new();
    for h in [host, "localhost", "127.0.0.1", "::1"] {
        let san = match h.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                h.to_owned()
                    .try_into()
                    .map_err(|e| CertsError::Invalid(format!("host {h:?}: {e}")))?,
            ),
        };
        if !names.contains(&san) {
            names.push(san);
        }
    }
    Ok(names)
}

/// `certs init`: a CA, one certificate per host, one per client name. Returns the files
/// written.
pub fn init(
    dir: &Path,
    hosts: &[String],
    clients: &[String],
    days: i64,
) -> Result<Vec<PathBuf>, CertsError> {
    if hosts.is_empty() {
        return Err(CertsError::Invalid(
            "--hosts names at least one host".into(),
        ));
    }
    for c in clients {
        valid_name(c)?;
    }
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let mut files = vec![dir.join("ca.pem"), dir.join("ca-key.pem")];
    for i in 1..=hosts.len() {
        files.push(dir.join(format!("node{i}.pem")));
        files.push(dir.join(format!("node{i}-key.pem")));
    }
    for c in clients {
        files.push(dir.join(format!("{c}.pem")));
        files.push(dir.join(format!("{c}-key.pem")));
    }
    check_free(&files)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = subject("Tributary development CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, days.max(1));
    let ca_key = KeyPair::generate()?;
    let ca_cert = params.self_signed(&ca_key)?;
    write_new(&dir.join("ca.pem"), &ca_cert.pem(), false)?;
    write_new(&dir.join("ca-key.pem"), &ca_key.serialize_pem(), true)?;
    let ca = Issuer::new(params, ca_key);
    for (i, host) in hosts.iter().enumerate() {
        let n = i + 1;
        let (cert, key) = sign_leaf(&format!("broker:{n}"), host_names(host)?, true, days, &ca)?;
        write_new(&dir.join(format!("node{n}.pem")), &cert, false)?;
        write_new(&dir.join(format!("node{n}-key.pem")), &key, true)?;
    }
    for c in clients {
        let (cert, key) = sign_leaf(c, Vec::new(), false, days, &ca)?;
        write_new(&dir.join(format!("{c}.pem")), &cert, false)?;
        write_new(&dir.join(format!("{c}-key.pem")), &key, true)?;
    }
    Ok(files)
}

/// `certs issue`: one more client certificate (`CN=<name>`) from the CA in `dir`.
pub fn issue(dir: &Path, name: &str, days: i64) -> Result<Vec<PathBuf>, CertsError> {
    valid_name(name)?;
    let files = vec![
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    ];
    check_free(&files)?;
    let read = |p: PathBuf| std::fs::read_to_string(&p).map_err(|e| file_error(&p, e));
    let ca_pem = read(dir.join("ca.pem"))?;
    let ca_key = KeyPair::from_pem(&read(dir.join("ca-key.pem"))?)
        .map_err(|e| file_error(&dir.join("ca-key.pem"), e))?;
    let ca = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .map_err(|e| file_error(&dir.join("ca.pem"), e))?;
    let (cert, key) = sign_leaf(name, Vec::new(), false, days, &ca)?;
    write_new(&files[0], &cert, false)?;
    write_new(&files[1], &key, true)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_makes_a_ca_and_certificates_that_load_and_never_overwrites() {
        let d = tempfile::tempdir().expect("tempdir");
        let files = init(
            d.path(),
            &["h1".into(), "10.0.0.2".into()],
            &["alice".into()],
            30,
        )
        .expect("init");
        assert_eq!(files.len(), 8);
        let tls = crate::server::tls::NodeTls::load(crate::server::tls::TlsSection {
            cert_file: d.path().join("node2.pem"),
            key_file: d.path().join("node2-key.pem"),
            ca_file: d.path().join("ca.pem"),
            client_auth: crate::server::tls::ClientAuth::Required,
        })
        .expect("node certificate loads");
        assert!(!tls.current_certificate().is_empty());
        client::tls::client_config(&client::tls::TlsFiles {
            ca_file: d.path().join("ca.pem"),
            cert_file: Some(d.path().join("alice.pem")),
            key_file: Some(d.path().join("alice-key.pem")),
            server_name: None,
        })
        .expect("client certificate loads");
        let again = init(d.path(), &["h1".into()], &[], 30).unwrap_err();
        assert!(again.to_string().contains("never overwrites"), "{again}");
        issue(d.path(), "bob", 1).expect("issue");
        assert!(issue(d.path(), "bob", 1).is_err());
        assert!(issue(d.path(), "../x", 1).is_err());
    }
}
