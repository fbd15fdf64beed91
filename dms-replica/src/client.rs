//! `MasterClient`: the replica's gRPC connection to the master's `dms.v1.Replication` service,
//! with the bearer token on every call and compression as configured.

use std::time::Duration;

use dms_common::config::Secret;
use dms_common::pb::replication_client::ReplicationClient;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::config::MasterLink;

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
    #[error("cannot connect to the master at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
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
