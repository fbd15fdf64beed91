//! The connection to the master: endpoint, TLS, bearer token, and [`CliError`], the one line
//! (and exit status) a failure becomes.

use std::time::Duration;

use dms_common::pb::admin_client::AdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::cli::Connection;

/// How long connecting to the master may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A failure, as one line on stderr and an exit status.
#[derive(Debug)]
pub(crate) struct CliError {
    pub message: String,
    pub exit: u8,
}

impl CliError {
    /// Something failed (exit status 1).
    pub(crate) fn failed(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            exit: 1,
        }
    }

    /// A bad argument (exit status 2).
    pub(crate) fn usage(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            exit: 2,
        }
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Debug, Clone)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The admin client with its token.
pub(crate) type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// A connected admin client, and the endpoint it talks to (for messages).
#[derive(Debug)]
pub(crate) struct Client {
    pub admin: Admin,
    pub endpoint: String,
}

fn read(what: &str, path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path)
        .map_err(|e| CliError::usage(format!("cannot read the {what} {}: {e}", path.display())))
}

/// The token given with --token or --token-file, if any.
fn token(conn: &Connection) -> Result<Option<MetadataValue<Ascii>>, CliError> {
    let token = match (&conn.token, &conn.token_file) {
        (Some(t), _) => t.trim().to_owned(),
        (None, Some(file)) => String::from_utf8(read("token file", file)?)
            .map_err(|_| {
                CliError::usage(format!(
                    "the token file {} is not UTF-8 text",
                    file.display()
                ))
            })?
            .trim()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if token.is_empty() {
        return Err(CliError::usage("the token is empty"));
    }
    format!("Bearer {token}")
        .parse()
        .map(Some)
        .map_err(|_| CliError::usage("the token contains characters a header cannot carry"))
}

/// The chain of an error's causes on one line (`a: b: c`), without tonic's generic "transport
/// error" head.
fn causes(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.len() > 1 && parts[0] == "transport error" {
        parts.remove(0);
    }
    parts.join(": ")
}

/// Whether `endpoint` (`http://host:port`) names this machine: `localhost` or a loopback
/// address.
fn is_loopback_endpoint(endpoint: &str) -> bool {
    let Ok(uri) = endpoint.parse::<tonic::codegen::http::Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Connects to the master named by `conn`.
pub(crate) async fn connect(conn: &Connection) -> Result<Client, CliError> {
    let endpoint = conn.endpoint.trim_end_matches('/').to_owned();
    let mut ep = Endpoint::from_shared(endpoint.clone())
        .map_err(|e| CliError::usage(format!("--endpoint {endpoint:?} is not a URL: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(20));
    let tls = endpoint.starts_with("https://");
    if !tls && (conn.ca.is_some() || conn.cert.is_some()) {
        return Err(CliError::usage(format!(
            "--ca and --cert need an https:// endpoint, not {endpoint}"
        )));
    }
    if tls {
        let mut config = ClientTlsConfig::new();
        config = match &conn.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read("CA certificate", ca)?)),
            None => config.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&conn.cert, &conn.key) {
            config = config.identity(Identity::from_pem(
                read("client certificate", cert)?,
                read("client key", key)?,
            ));
        }
        ep = ep
            .tls_config(config)
            .map_err(|e| CliError::usage(format!("TLS settings: {}", causes(&e))))?;
    }
    // A token that cannot be read is a usage error, whether or not the master is up.
    let bearer = Bearer(token(conn)?);
    if bearer.0.is_some() && !tls && !is_loopback_endpoint(&endpoint) {
        eprintln!(
            "warning: the token goes to {endpoint} over plain HTTP: anyone on the network path can read it and use it; use an https:// endpoint (the master's http.tls)"
        );
    }
    let channel = ep.connect().await.map_err(|e| {
        CliError::failed(format!(
            "cannot reach the master at {endpoint}: {}",
            causes(&e)
        ))
    })?;
    let admin = AdminClient::with_interceptor(channel, bearer).max_decoding_message_size(64 << 20);
    Ok(Client { admin, endpoint })
}

impl Client {
    /// A refused or failed call as one line.
    pub(crate) fn error(&self, status: &Status) -> CliError {
        refused(&self.endpoint, status)
    }
}

/// A refused or failed call at `endpoint` as one line and an exit status.
pub(crate) fn refused(endpoint: &str, status: &Status) -> CliError {
    let message = status.message();
    match status.code() {
        Code::Unauthenticated => CliError::failed(format!(
            "the master at {endpoint} refused the call: {message}; give the token with --token-file, --token or DMS_TOKEN"
        )),
        Code::PermissionDenied => CliError::failed(format!("permission denied: {message}")),
        Code::InvalidArgument => CliError::usage(message),
        // A transport failure carries its cause; an Unavailable the master sent does not.
        Code::Unavailable | Code::Unknown if std::error::Error::source(status).is_some() => {
            let cause = std::error::Error::source(status)
                .map(causes)
                .unwrap_or_else(|| message.to_owned());
            CliError::failed(format!("lost the master at {endpoint}: {cause}"))
        }
        Code::Unimplemented => CliError::failed(format!(
            "the master at {endpoint} does not serve this call (an older version?): {message}"
        )),
        _ => CliError::failed(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_endpoints_are_told_apart() {
        assert!(is_loopback_endpoint("http://127.0.0.1:11183"));
        assert!(is_loopback_endpoint("http://localhost:11183"));
        assert!(is_loopback_endpoint("http://[::1]:11183"));
        assert!(!is_loopback_endpoint("http://10.0.0.5:11183"));
        assert!(!is_loopback_endpoint("http://dms.example.com"));
    }

    #[test]
    fn refusals_are_one_line_with_their_exit_status() {
        let e = refused(
            "http://m:1",
            &Status::unauthenticated("a bearer token is required"),
        );
        assert_eq!(e.exit, 1);
        assert!(e.message.contains("http://m:1"), "{}", e.message);
        assert!(e.message.contains("--token"), "{}", e.message);
        let e = refused("x", &Status::invalid_argument("field `days`: 0"));
        assert_eq!((e.exit, e.message.as_str()), (2, "field `days`: 0"));
        let e = refused("x", &Status::not_found("no task \"t\""));
        assert_eq!((e.exit, e.message.as_str()), (1, "no task \"t\""));
        let e = refused("x", &Status::permission_denied("read-only"));
        assert!(e.message.starts_with("permission denied"));
        assert!(!e.message.contains('\n'));
    }
}
