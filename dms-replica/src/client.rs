//! `MasterClient`: the replica's gRPC connection to the master's `dms.v1.Replication` service,
//! with the bearer token on every call, compression as configured and TLS (`master.tls`) for an
//! `https://` master.

use std::time::Duration;

use dms_common::config::Secret;
use dms_common::pb::replication_client::ReplicationClient;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::config::{MasterLink, MasterTlsConfig};

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<tonic::metadata::Ascii>>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("authorization", t.clone());
        }
        Ok(req)
    }
}

/// A client of the master's replication service.
pub type MasterClient = ReplicationClient<InterceptedService<Channel, BearerToken>>;

/// Why the master could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("master.url {url:?}: {source}")]
    Url {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot connect to the master at {url}: {}", error_chain(.source))]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{key}: {message}")]
    Tls { key: String, message: String },
    #[error("the token contains characters a header cannot carry")]
    Token,
}

/// Connects to the master.
pub async fn connect(
    link: &MasterLink,
    token: Option<&Secret>,
) -> Result<MasterClient, ConnectError> {
    let endpoint = Endpoint::from_shared(link.url.clone())
        .map_err(|source| ConnectError::Url {
            url: link.url.clone(),
            source,
        })?
        .connect_timeout(link.connect_timeout.0)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20));
    let endpoint = match &link.tls {
        Some(tls) => endpoint
            .tls_config(client_tls(tls)?)
            .map_err(|source| ConnectError::Url {
                url: link.url.clone(),
                source,
            })?,
        None => endpoint,
    };
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| ConnectError::Connect {
            url: link.url.clone(),
            source,
        })?;
    let token = token
        .map(|t| format!("Bearer {}", t.expose()).parse())
        .transpose()
        .map_err(|_| ConnectError::Token)?;
    let mut client = ReplicationClient::with_interceptor(channel, BearerToken(token))
        .max_decoding_message_size(256 << 20);
    match link.compression.as_str() {
        "zstd" => {
            client = client
                .send_compressed(CompressionEncoding::Zstd)
                .accept_compressed(CompressionEncoding::Zstd);
        }
        "gzip" => {
            client = client
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        _ => {}
    }
    Ok(client)
}

/// The TLS settings of `master.tls`, its files read now.
fn client_tls(tls: &MasterTlsConfig) -> Result<ClientTlsConfig, ConnectError> {
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| ConnectError::Tls {
            key: key.to_owned(),
            message: format!("cannot read {}: {e}", path.display()),
        })
    };
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("master.tls.ca", &tls.ca)?));
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        config = config.identity(Identity::from_pem(
            read("master.tls.cert", cert)?,
            read("master.tls.key", key)?,
        ));
    }
    Ok(config)
}

/// `e` and its causes, `: `-separated (tonic's own message is only "transport error").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Whether the server behind a plaintext `http://` url answers like a TLS server: it is sent
/// the HTTP/2 preface, and a TLS alert record or a DMS master's "serves TLS" answer comes back.
/// Used to explain a failing link.
pub async fn speaks_tls(url: &str, timeout: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(uri) = url.parse::<tonic::codegen::http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let probe = async move {
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 512];
        while answer.len() < 4096 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.first() == Some(&0x15) {
                break;
            }
        }
        std::io::Result::Ok(answer)
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(answer)) => {
            answer.first() == Some(&0x15) || answer.windows(15).any(|w| w == b"serves TLS: use")
        }
        _ => false,
    }
}
