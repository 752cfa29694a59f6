//! The collector's TLS: its certificate and key, the CA its clients' and peers'
//! certificates are checked against, and the client configuration it uses to call other
//! brokers (same CA, its own certificate as client certificate).
//!
//! Reload (SIGHUP) builds everything from the files again and swaps it in only when all of
//! it loads: a bad file leaves the old certificate serving, with an error logged. New
//! handshakes use the new certificate, both as a server and as a client of other brokers;
//! connections already up keep going.
//!
//! Invariant: TLS 1.2 and 1.3 only, ring provider, no other trust roots than `ca_file`.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use client::tls::{TlsError, load_certs, load_key, provider, root_store};
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serde::Deserialize;

/// Whether clients must show a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate asked for (clients authenticate with tokens, or not at all).
    #[default]
    None,
    /// Asked for and checked when shown; clients without one may still connect.
    Optional,
    /// A certificate signed by `ca_file` is required to connect.
    Required,
}

/// The collector's `tls:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// This node's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// The CA certificates (PEM) client and peer certificates are checked against, and
    /// that this node trusts when it calls other brokers.
    pub ca_file: PathBuf,
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// The loaded TLS state of a node; see the module docs for reloading.
#[derive(Debug)]
pub struct NodeTls {
    files: TlsSection,
    server: RwLock<Arc<rustls::ServerConfig>>,
    key: Arc<KeySlot>,
    client: Arc<rustls::ClientConfig>,
}

/// The node's current certificate and key, read at each handshake.
#[derive(Debug)]
struct KeySlot(RwLock<Arc<CertifiedKey>>);

impl KeySlot {
    fn get(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ResolvesServerCert for KeySlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl ResolvesClientCert for KeySlot {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn certified_key(files: &TlsSection) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = load_certs(&files.cert_file)?;
    let key = load_key(&files.key_file)?;
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::File {
            path: files.key_file.clone(),
            message: format!("unusable private key: {e}"),
        })?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match().map_err(|e| TlsError::File {
        path: files.key_file.clone(),
        message: format!(
            "does not belong to the certificate in {}: {e}",
            files.cert_file.display()
        ),
    })?;
    Ok(Arc::new(ck))
}

fn server_config(
    files: &TlsSection,
    key: Arc<KeySlot>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(client::tls::PROTOCOL_VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match files.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let roots = Arc::new(root_store(&files.ca_file)?);
            let v = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let v = if auth == ClientAuth::Optional {
                v.allow_unauthenticated()
            } else {
                v
            };
            let v = v
                .build()
                .map_err(|e| TlsError::Config(format!("tls.ca_file: {e}")))?;
            builder.with_client_cert_verifier(v)
        }
    };
    Ok(Arc::new(builder.with_cert_resolver(key)))
}

impl NodeTls {
    /// Loads every file of the section; fails naming the file that does not load.
    pub fn load(files: TlsSection) -> Result<Self, TlsError> {
        let key = Arc::new(KeySlot(RwLock::new(certified_key(&files)?)));
        let server = server_config(&files, key.clone())?;
        let roots = Arc::new(root_store(&files.ca_file)?);
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(client::tls::PROTOCOL_VERSIONS)
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_cert_resolver(key.clone());
        Ok(Self {
            files,
            server: RwLock::new(server),
            key,
            client: Arc::new(client),
        })
    }

    /// Reads the files again; swaps the new certificate, key and client CA in only if all
    /// of them load. (The CA this node trusts as a client of other brokers is read at
    /// start only.)
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = certified_key(&self.files)?;
        let slot = Arc::new(KeySlot(RwLock::new(fresh.clone())));
        // Built against a private slot first so a bad CA file changes nothing; then the
        // shared slot (read by the outgoing client too) takes the new key.
        server_config(&self.files, slot)?;
        *self.key.0.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        let server = server_config(&self.files, self.key.clone())?;
        *self.server.write().unwrap_or_else(|p| p.into_inner()) = server;
        Ok(())
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(
            self.server
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    /// The configuration this node calls other brokers with.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    pub fn client_auth(&self) -> ClientAuth {
        self.files.client_auth
    }

    /// The end-entity certificate served now (tests and `/health` compare it).
    pub fn current_certificate(&self) -> Vec<u8> {
        self.key
            .get()
            .cert
            .first()
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default()
    }
}
