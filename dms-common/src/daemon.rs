//! What both daemon binaries do around their server: a multi-threaded runtime, the listener
//! bound from the config, SIGINT and SIGTERM turned into one shutdown token, and the exit
//! status (0 after a clean shutdown, 1 on any failure); and the HTTP server itself
//! ([`serve_http`]), with the limits that keep one slow or stuck client from holding the
//! process ([`HttpLimits`]).

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Binds `listen` (named `key` in errors) and runs `run(listener, shutdown)` until it returns;
/// `shutdown` fires on SIGINT or SIGTERM.
pub fn serve<F, Fut, E>(listen: SocketAddr, key: &str, run: F) -> ExitCode
where
    F: FnOnce(TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot listen on {listen} ({key}): {e}");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        match run(listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}

/// Limits of the HTTP listener of both daemons (REST and gRPC on one port).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Time to receive a request's headers; it also closes a keep-alive connection left idle
    /// this long. A client that sends half a request line and then nothing is dropped.
    pub header_read_timeout: std::time::Duration,
    /// Time for a REST request from its headers to its answer (reading its body included); a
    /// body shorter than its `Content-Length` answers 408 instead of hanging. gRPC calls are
    /// not bounded: streams live while data or heartbeats flow, and HTTP/2 keep-alive pings
    /// (every 20 s, 20 s to answer) drop dead peers.
    pub request_timeout: std::time::Duration,
    /// Most open connections; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: std::time::Duration::from_secs(10),
            request_timeout: std::time::Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` fires, then stops accepting, lets open requests
/// and streams finish for at most `deadline`, and closes what is left.
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    shutdown: &CancellationToken,
    deadline: std::time::Duration,
    limits: HttpLimits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let app = app.layer(axum::middleware::from_fn(move |req, next| {
        bound_rest_request(req, next, limits.request_timeout)
    }));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(std::time::Duration::from_secs(20))
        .keep_alive_timeout(std::time::Duration::from_secs(20));
    let graceful = GracefulShutdown::new();
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(deadline) => {
            tracing::warn!("open connections did not finish within {deadline:?}; closing them");
        }
    }
    Ok(())
}

/// Bounds a REST request by `timeout` (gRPC calls pass untouched: their streams may live long).
async fn bound_rest_request(
    req: axum::extract::Request,
    next: axum::middleware::Next,
    timeout: std::time::Duration,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return next.run(req).await;
    }
    let what = format!("{} {}", req.method(), req.uri().path());
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (
            axum::http::StatusCode::REQUEST_TIMEOUT,
            axum::Json(serde_json::json!({
                "success": false,
                "error": format!("{what}: the request (its body included) did not arrive within {timeout:?}"),
            })),
        )
            .into_response(),
    }
}

/// The HTTP listener section of a daemon's config (`http:`); `PORT` is the daemon's default
/// port (the master 11183, a replica 11184).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig<const PORT: u16> {
    /// Address and port to listen on.
    #[serde(default = "default_listen::<PORT>")]
    pub listen: std::net::SocketAddr,
    /// Time to receive a request's headers; also how long a keep-alive connection may sit idle.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: crate::config::ConfigDuration,
    /// Time for a REST request from its headers to its answer, its body included (408 after).
    /// gRPC streams are not bounded by it.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: crate::config::ConfigDuration,
    /// Most open connections; more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_listen<const PORT: u16>() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([0, 0, 0, 0], PORT))
}
fn default_header_read_timeout() -> crate::config::ConfigDuration {
    crate::config::ConfigDuration::from_secs(10)
}
fn default_request_timeout() -> crate::config::ConfigDuration {
    crate::config::ConfigDuration::from_secs(60)
}
fn default_max_connections() -> usize {
    1024
}

impl<const PORT: u16> Default for HttpConfig<PORT> {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen::<PORT>(),
            header_read_timeout: default_header_read_timeout(),
            request_timeout: default_request_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

impl<const PORT: u16> HttpConfig<PORT> {
    /// The listener's limits.
    pub fn limits(&self) -> HttpLimits {
        HttpLimits {
            header_read_timeout: self.header_read_timeout.0,
            request_timeout: self.request_timeout.0,
            max_connections: self.max_connections,
        }
    }

    /// Problems with the section, keys under `http.`.
    pub fn validate(&self) -> Vec<crate::config::ConfigIssue> {
        let mut issues = Vec::new();
        for (key, d) in [
            ("http.header_read_timeout", self.header_read_timeout),
            ("http.request_timeout", self.request_timeout),
        ] {
            if d.0.is_zero() {
                issues.push(crate::config::ConfigIssue::new(key, "must be more than 0s"));
            }
        }
        if self.max_connections == 0 {
            issues.push(crate::config::ConfigIssue::new(
                "http.max_connections",
                "must be at least 1",
            ));
        }
        issues
    }
}
