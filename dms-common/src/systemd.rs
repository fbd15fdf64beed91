//! Talking to systemd (or any service manager speaking the `sd_notify` protocol) from a
//! `Type=notify` daemon: readiness, what the daemon is doing, watchdog pings and shutdown.
//!
//! - [`Notifier`]: sends `READY=1`, `STATUS=…`, `RELOADING=1` and `STOPPING=1` to the socket
//!   named by `NOTIFY_SOCKET`; without that variable (not under systemd) every call does
//!   nothing. Cheap to clone; the daemons hand one to their server through
//!   [`crate::daemon::Daemon`].
//! - [`watchdog_interval`]: the watchdog period systemd asks for (`WATCHDOG_USEC`, for this
//!   process when `WATCHDOG_PID` is set), and [`run_watchdog`], the loop that sends
//!   `WATCHDOG=1` at half of it, but only while the runtime answers: each ping first waits for
//!   a freshly spawned task and a blocking-pool job to run, so a wedged runtime stops the pings
//!   and systemd restarts the daemon.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// Sends state changes to the service manager; does nothing when not run by one.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// A notifier for the socket in `NOTIFY_SOCKET`, if the variable is set.
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty()),
        }
    }

    /// A notifier that sends nothing (a daemon run in-process by a test or a benchmark).
    pub fn disabled() -> Notifier {
        Notifier { enabled: false }
    }

    /// Whether messages are sent.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// `READY=1` with a status line: the daemon serves.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A `STATUS=` line: what the daemon is doing now.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// `RELOADING=1`: a configuration reload begins; [`Notifier::ready`] ends it.
    pub fn reloading(&self) {
        self.send(&[NotifyState::Reloading, NotifyState::Status("reloading")]);
    }

    /// `STOPPING=1`: shutdown begins.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
    }

    /// `WATCHDOG=1`: the daemon is alive.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
        }
    }
}

/// The watchdog period the service manager expects (`WATCHDOG_USEC`), if any. Like
/// `sd_watchdog_enabled(3)`: a `WATCHDOG_PID` naming another process turns it off, a missing
/// one does not.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Sends `WATCHDOG=1` every `interval / 2` until `stop` fires, each time only after a task
/// spawned on the runtime and a job on its blocking pool (where the SQLite work runs) have run
/// within that half interval. A ping that cannot be earned is skipped with a warning; systemd
/// restarts a daemon whose pings stop for `interval`.
pub async fn run_watchdog(notifier: Notifier, interval: Duration, stop: CancellationToken) {
    let every = interval / 2;
    tracing::info!(?interval, "systemd watchdog on: pinging every {every:?}");
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let probe = async {
            tokio::spawn(async {}).await.is_ok() && tokio::task::spawn_blocking(|| ()).await.is_ok()
        };
        match tokio::time::timeout(every, probe).await {
            Ok(true) => notifier.watchdog(),
            Ok(false) | Err(_) => {
                tracing::warn!("the runtime did not answer within {every:?}; watchdog ping skipped")
            }
        }
    }
}
