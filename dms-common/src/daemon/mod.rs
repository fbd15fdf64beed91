//! What both daemon binaries do around their server: a multi-threaded runtime, the listener
//! bound from the config, signals (SIGINT and SIGTERM turned into one shutdown token, SIGHUP
//! into a reload), systemd notifications and its watchdog, and the exit status (0 after a clean
//! shutdown, 1 on any failure); and the HTTP server itself.
//!
//! # Layout
//!
//! - this module: [`serve`], the process around a daemon, and the signals.
//! - `http`: [`serve_http`], the server with the limits that keep one slow or stuck client
//!   from holding the process ([`HttpLimits`]) and TLS when configured ([`crate::tls`]).
//! - `http_config`: [`HttpConfig`], the `http:` section, and the limits and rules built from it.
//! - [`envelope_io`]: requests hyper refuses before the router sees them, still answered in the
//!   JSON error envelope.
//! - [`framing`]: a request whose head carries both `Content-Length` and `Transfer-Encoding`
//!   (which hyper lets through as chunked) is refused with 400 before routing
//!   ([`refuse_ambiguous_framing`]).
//!
//! Key types: [`Daemon`] (what `serve` hands the daemon's `run`: the shutdown token, the
//! reload signal and the systemd notifier), [`ReloadSignal`], [`HttpConfig`], [`HttpLimits`].

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::systemd::Notifier;

pub mod envelope_io;
pub mod framing;
mod http;
mod http_config;

pub use http::{HttpLimits, refuse_ambiguous_framing, serve_http};
pub use http_config::HttpConfig;

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
