//! TLS for the daemons' one listener (REST over HTTP/1.1 and gRPC over HTTP/2, told apart by
//! ALPN `h2` / `http/1.1`), with rustls on the aws-lc-rs provider only.
//!
//! - [`ServerTlsConfig`]: the `http.tls` config section (certificate chain, private key and,
//!   for mutual TLS, the CA that must have signed every client's certificate); its
//!   [`ServerTlsConfig::server_config`] reads the files and names the key and the file in every
//!   error.
//! - [`TlsAcceptor`]: the acceptor `serve_http` wraps connections in. Its server config can be
//!   swapped at run time ([`TlsAcceptor::replace`], on SIGHUP): connections accepted after the
//!   swap get the new certificate, open ones keep theirs.
//! - [`read_certs`] / [`read_key`]: PEM files as rustls types, for clients' settings too.
//!
//! A client that speaks plain HTTP to a TLS port gets a plain answer saying so (a 400 for
//! HTTP/1.1, a GOAWAY whose debug data says so for HTTP/2) instead of a dropped connection,
//! and the server logs the refused connection at debug level.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::ConfigIssue;

/// The `http.tls` section: serve HTTPS and gRPC over TLS on the listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM file with the server's certificate, followed by any intermediate certificates.
    pub cert: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the CA certificates clients' certificates must be signed by. Set, every
    /// client (replicas, `dmsctl`, HTTP clients) must present one: mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
}

/// The only crypto provider DMS uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificates in the PEM file `path` (config key `key`); at least one.
pub fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigIssue> {
    let text = read_file(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ConfigIssue::new(
                key,
                format!("{} is not a valid PEM file: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(ConfigIssue::new(
            key,
            format!(
                "{} holds no certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// The private key in the PEM file `path` (config key `key`).
pub fn read_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigIssue> {
    let text = read_file(key, path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| {
        let why = match e {
            rustls_pki_types::pem::Error::NoItemsFound => "holds no private key".to_owned(),
            e => format!("is not a valid PEM private key: {e}"),
        };
        ConfigIssue::new(key, format!("{} {why}", path.display()))
    })
}

fn read_file(key: &str, path: &Path) -> Result<Vec<u8>, ConfigIssue> {
    std::fs::read(path)
        .map_err(|e| ConfigIssue::new(key, format!("cannot read {}: {e}", path.display())))
}

impl ServerTlsConfig {
    /// Reads the files into a rustls server config offering `h2` and `http/1.1`; `prefix` is
    /// the section's key (`http.tls`) for errors.
    pub fn server_config(&self, prefix: &str) -> Result<Arc<ServerConfig>, ConfigIssue> {
        let certs = read_certs(&format!("{prefix}.cert"), &self.cert)?;
        let key = read_key(&format!("{prefix}.key"), &self.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigIssue::new(prefix, format!("TLS setup failed: {e}")))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let ca_key = format!("{prefix}.client_ca");
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(&ca_key, path)? {
                    roots.add(cert).map_err(|e| {
                        ConfigIssue::new(
                            &ca_key,
                            format!("{}: not a usable CA certificate: {e}", path.display()),
                        )
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                        .build()
                        .map_err(|e| {
                            ConfigIssue::new(&ca_key, format!("{}: {e}", path.display()))
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            ConfigIssue::new(
                format!("{prefix}.key"),
                format!(
                    "{} does not go with the certificate in {}: {e}",
                    self.key.display(),
                    self.cert.display()
                ),
            )
        })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Wraps accepted connections in TLS with a server config that can be replaced at run time.
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<RwLock<Arc<ServerConfig>>>,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor").finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// An acceptor serving `config`.
    pub fn new(config: Arc<ServerConfig>) -> TlsAcceptor {
        TlsAcceptor {
            config: Arc::new(RwLock::new(config)),
        }
    }

    /// Serves `config` to connections accepted from now on.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    fn current(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(
            self.config
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    /// The TLS handshake on `stream`, within `timeout`; `None` (logged at debug level) when the
    /// peer is not speaking TLS, fails the handshake or is too slow.
    pub async fn accept(
        &self,
        stream: TcpStream,
        timeout: Duration,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let acceptor = self.current();
        let handshake = async move {
            let mut first = [0u8; 1];
            let n = stream.peek(&mut first).await?;
            // Every TLS connection opens with a handshake record (content type 22).
            if n == 1 && first[0] != 0x16 {
                answer_plaintext(stream).await?;
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "plaintext on the TLS port (answered with a hint to use TLS)",
                ));
            }
            acceptor.accept(stream).await
        };
        match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake not done within {timeout:?}; connection closed");
                None
            }
        }
    }
}

/// Tells a plaintext client that this port speaks TLS, then closes the connection.
async fn answer_plaintext(mut stream: TcpStream) -> std::io::Result<()> {
    const MESSAGE: &str = "this port serves TLS: use https:// (and the server's CA)";
    let mut request = [0u8; 4096];
    let n = stream.read(&mut request).await?;
    if request[..n].starts_with(b"PRI * HTTP/2.0") {
        // An HTTP/2 client (gRPC): an empty SETTINGS frame, then GOAWAY (last stream 0,
        // PROTOCOL_ERROR) carrying the message as its debug data.
        let mut out = vec![0, 0, 0, 0x4, 0, 0, 0, 0, 0];
        let len = 8 + MESSAGE.len();
        out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 0x7, 0]);
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        out.extend_from_slice(MESSAGE.as_bytes());
        stream.write_all(&out).await?;
    } else {
        let body = format!("{{\"success\":false,\"error\":\"{MESSAGE}\"}}");
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(answer.as_bytes()).await?;
    }
    stream.shutdown().await
}
