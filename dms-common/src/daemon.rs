//! What both daemon binaries do around their server: a multi-threaded runtime, the listener
//! bound from the config, signals (SIGINT and SIGTERM turned into one shutdown token, SIGHUP
//! into a reload), systemd notifications and its watchdog, and the exit status (0 after a clean
//! shutdown, 1 on any failure); and the HTTP server itself ([`serve_http`]), with the limits
//! that keep one slow or stuck client from holding the process ([`HttpLimits`]) and TLS when
//! configured ([`crate::tls`]). Requests hyper refuses before the router sees them are still
//! answered in the JSON error envelope ([`envelope_io`]).
//!
//! Key types: [`Daemon`] (what `serve` hands the daemon's `run`: the shutdown token, the
//! reload signal and the systemd notifier), [`ReloadSignal`], [`HttpConfig`], [`HttpLimits`].

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::systemd::Notifier;
use crate::tls::TlsAcceptor;

pub mod envelope_io;
use envelope_io::EnvelopeIo;

/// What a daemon's `run` gets from [`serve`] besides its listener.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// Fires on SIGINT or SIGTERM.
    pub shutdown: CancellationToken,
    /// Changes on every SIGHUP: re-read the config and apply what can change at run time.
    pub reload: ReloadSignal,
    /// Readiness and status for systemd (`Type=notify`); call [`Notifier::ready`] once the
    /// state is open and the listener serves.
    pub notifier: Notifier,
}

impl Daemon {
    /// A daemon run in-process (tests, benchmarks): stops on `shutdown`, never reloads,
    /// notifies no one.
    pub fn detached(shutdown: CancellationToken) -> Daemon {
        Daemon {
            shutdown,
            reload: ReloadSignal::never(),
            notifier: Notifier::disabled(),
        }
    }
}

/// SIGHUPs as a generation counter: [`ReloadSignal::changed`] returns once per reload asked
/// for (several SIGHUPs before it is awaited count as one).
#[derive(Debug, Clone)]
pub struct ReloadSignal(tokio::sync::watch::Receiver<u64>);

impl ReloadSignal {
    /// A pair: the sender bumps the generation, the signal sees it.
    pub fn channel() -> (tokio::sync::watch::Sender<u64>, ReloadSignal) {
        let (tx, rx) = tokio::sync::watch::channel(0);
        (tx, ReloadSignal(rx))
    }

    /// A signal that never fires.
    pub fn never() -> ReloadSignal {
        Self::channel().1
    }

    /// Waits for the next reload; returns its generation.
    pub async fn changed(&mut self) -> u64 {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        *self.0.borrow_and_update()
    }
}

/// Binds `listen` (named `key` in errors) and runs `run(listener, daemon)` until it returns;
/// `daemon.shutdown` fires on SIGINT or SIGTERM (and `STOPPING=1` goes to systemd),
/// `daemon.reload` on SIGHUP. Under a systemd watchdog (`WATCHDOG_USEC`) it pings for as long
/// as the runtime answers.
pub fn serve<F, Fut, E>(listen: SocketAddr, key: &str, run: F) -> ExitCode
where
    F: FnOnce(TcpListener, Daemon) -> Fut,
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
        let notifier = Notifier::from_env();
        let watchdog_stop = CancellationToken::new();
        let _stop_watchdog = watchdog_stop.clone().drop_guard();
        if let Some(interval) = crate::systemd::watchdog_interval() {
            tokio::spawn(crate::systemd::run_watchdog(
                notifier.clone(),
                interval,
                watchdog_stop,
            ));
        }
        notifier.status("starting: opening the state file and the store");
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot listen on {listen} ({key}): {e}");
                notifier.status(&format!("failed: cannot listen on {listen}: {e}"));
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        let (reload_tx, reload) = ReloadSignal::channel();
        let signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(signals.run(shutdown.clone(), reload_tx, notifier.clone()));
        let daemon = Daemon {
            shutdown,
            reload,
            notifier: notifier.clone(),
        };
        match run(listener, daemon).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                notifier.status(&format!("failed: {e:#}"));
                ExitCode::FAILURE
            }
        }
    })
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// SIGTERM or SIGINT: `STOPPING=1` and cancel `shutdown`; SIGHUP: bump the reload
    /// generation (until shutdown).
    async fn run(
        mut self,
        shutdown: CancellationToken,
        reload: tokio::sync::watch::Sender<u64>,
        notifier: Notifier,
    ) {
        loop {
            tokio::select! {
                _ = self.term.recv() => tracing::info!("SIGTERM received"),
                _ = self.int.recv() => tracing::info!("SIGINT received"),
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP received: reloading the config");
                    reload.send_modify(|g| *g += 1);
                    continue;
                }
                _ = shutdown.cancelled() => {}
            }
            notifier.stopping();
            shutdown.cancel();
            return;
        }
    }
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
/// and streams finish for at most `deadline`, and closes what is left. With `tls`, every
/// connection is a TLS connection (its handshake bounded by `limits.header_read_timeout`, and
/// holding one of the `max_connections` slots meanwhile).
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    shutdown: &CancellationToken,
    deadline: std::time::Duration,
    limits: HttpLimits,
    tls: Option<TlsAcceptor>,
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
        let watcher = graceful.watcher();
        let Some(tls) = tls.clone() else {
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(EnvelopeIo::new(stream)), service)
                .into_owned();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
            continue;
        };
        let (builder, shutdown) = (builder.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let stream = tokio::select! {
                s = tls.accept(stream, limits.header_read_timeout) => match s {
                    Some(s) => s,
                    None => return,
                },
                _ = shutdown.cancelled() => return,
            };
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(EnvelopeIo::new(stream)), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
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
    /// TLS on the listener (HTTPS and gRPC over TLS); plaintext without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::ServerTlsConfig>,
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
            tls: None,
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

    /// The TLS acceptor `http.tls` describes (its files read now), if TLS is configured.
    pub fn tls_acceptor(&self) -> Result<Option<TlsAcceptor>, crate::config::ConfigIssue> {
        self.tls
            .as_ref()
            .map(|t| t.server_config("http.tls").map(TlsAcceptor::new))
            .transpose()
    }

    /// Problems with the section, keys under `http.` (TLS files included).
    pub fn validate(&self) -> Vec<crate::config::ConfigIssue> {
        let mut issues = Vec::new();
        if let Err(issue) = self.tls_acceptor() {
            issues.push(issue);
        }
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
