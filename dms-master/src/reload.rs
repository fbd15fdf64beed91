//! The master's config reload on SIGHUP (`systemctl reload dms-master`).
//!
//! The config file is read and checked again as at start. If it has problems, each is logged
//! and the running settings stay as they are. Otherwise what can change at run time is applied:
//! the TLS certificate and key (re-read even when their paths did not change, so renewed files
//! take effect), schedules and alert settings; every other changed section is logged as
//! needing a restart.
//!
//! Key types: [`Reloadable`] (what a reload may change) and [`run`] (the loop waiting for
//! reload signals).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use dms_common::daemon::ReloadSignal;
use dms_common::systemd::Notifier;
use dms_common::tls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::MasterConfig;

/// Top-level config sections applied at run time; other changes need a restart.
pub const RELOADABLE_SECTIONS: &[&str] = &["http.tls", "schedules", "alerts"];

/// Builds the `STATUS=` line shown once a reload is done.
pub type StatusLine = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

/// What a reload may change, and where it reports.
pub struct Reloadable {
    /// The config file re-read on reload; `None` refuses reloads.
    pub config_path: Option<PathBuf>,
    /// The settings in force.
    pub current: MasterConfig,
    /// The listener's TLS, if it serves TLS.
    pub tls: Option<TlsAcceptor>,
    /// The scheduled jobs (`schedules`).
    pub scheduler: crate::ops::schedule::Scheduler,
    /// The webhook alerts (`alerts`).
    pub alerts: crate::alerts::Alerts,
    pub notifier: Notifier,
    /// The status line after a reload (`ready: N series`).
    pub ready_status: StatusLine,
}

impl std::fmt::Debug for Reloadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloadable")
            .field("config_path", &self.config_path)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Reloads on every `signal` until `stop` fires.
pub async fn run(mut target: Reloadable, mut signal: ReloadSignal, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = signal.changed() => {}
            _ = stop.cancelled() => return,
        }
        target.notifier.reloading();
        target.reload();
        // The status line reads the store, which may hang: shutdown does not wait for it.
        tokio::select! {
            status = (target.ready_status)() => target.notifier.ready(&status),
            _ = stop.cancelled() => return,
        }
    }
}

impl Reloadable {
    /// Re-reads the config file and applies it; returns whether it was applied.
    pub fn reload(&mut self) -> bool {
        let Some(path) = &self.config_path else {
            tracing::warn!("reload asked for, but the master was not started from a config file");
            return false;
        };
        let new = match MasterConfig::load(path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("config reload refused, the running settings stay: {e}");
                return false;
            }
        };
        if let Err(e) = schedules_fit_running_series(&self.current, &new) {
            tracing::error!("config reload refused, the running settings stay: {e}");
            return false;
        }
        let changed = changed_sections(&self.current, &new);
        // TLS files are read again whatever changed: renewed certificates keep their paths.
        // Everything that can fail is prepared before anything is applied.
        let tls = match self.prepare_tls(&new) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("config reload refused, the running settings stay: {e}");
                return false;
            }
        };
        if let Err(e) = self.scheduler.reload(new.schedules.clone()) {
            tracing::error!("config reload refused, the running settings stay: {e}");
            return false;
        }
        if let (Some(acceptor), Some((config, cert))) = (&self.tls, tls) {
            acceptor.replace(config);
            tracing::info!(cert = %cert.display(), "TLS certificate reloaded; new connections use it");
        }
        self.alerts.reload(new.alerts.clone());
        for section in &changed {
            if RELOADABLE_SECTIONS.contains(&section.as_str()) {
                tracing::info!(section = %section, "config reload: applied");
            } else {
                tracing::warn!(
                    section = %section,
                    "config reload: changed, but takes effect only after a restart"
                );
            }
        }
        tracing::info!(
            path = %path.display(),
            changed = changed.len(),
            "config reloaded"
        );
        self.current = new;
        true
    }

    /// The new TLS server config (and its certificate's path) when the listener serves TLS.
    fn prepare_tls(
        &self,
        new: &MasterConfig,
    ) -> Result<Option<(Arc<dms_common::tls::ServerConfig>, PathBuf)>, String> {
        match (&self.tls, &new.http.tls) {
            (Some(_), Some(tls)) => {
                let config = tls
                    .server_config("http.tls")
                    .map_err(|i| format!("{}: {}", i.key, i.message))?;
                return Ok(Some((config, tls.cert.clone())));
            }
            (None, Some(_)) => tracing::warn!(
                "config reload: http.tls was added; the listener serves plaintext until a restart"
            ),
            (Some(_), None) => tracing::warn!(
                "config reload: http.tls was removed; the listener keeps serving TLS until a restart"
            ),
            (None, None) => {}
        }
        Ok(None)
    }
}

/// Schedules are applied at run time, but the watchlists and sources they select from are
/// not (they need a restart): a reloaded schedule may only name watchlists and sources that
/// are running, with the symbols they have now.
fn schedules_fit_running_series(current: &MasterConfig, new: &MasterConfig) -> Result<(), String> {
    for (i, job) in new.schedules.iter().enumerate() {
        for (j, name) in job.watchlists.iter().enumerate() {
            let running = current.watchlists.iter().find(|w| &w.name == name);
            let reloaded = new.watchlists.iter().find(|w| &w.name == name);
            if running.is_none() {
                return Err(format!(
                    "schedules[{i}].watchlists[{j}]: watchlist {name:?} is new; watchlists take effect only after a restart"
                ));
            }
            if running.map(|w| (&w.symbols, &w.symbols_file, &w.source))
                != reloaded.map(|w| (&w.symbols, &w.symbols_file, &w.source))
            {
                return Err(format!(
                    "schedules[{i}].watchlists[{j}]: watchlist {name:?} changed; watchlists take effect only after a restart"
                ));
            }
        }
        if let Some(source) = &job.source
            && !current.sources.iter().any(|s| s.name() == source)
        {
            return Err(format!(
                "schedules[{i}].source: source {source:?} is new; sources take effect only after a restart"
            ));
        }
    }
    Ok(())
}

/// The sections that differ between `old` and `new` (top-level keys, and `http.tls` apart
/// from the rest of `http`). Secrets print as `<redacted>`, so a changed token is not seen
/// here (tokens need a restart anyway).
pub fn changed_sections(old: &MasterConfig, new: &MasterConfig) -> Vec<String> {
    let (Ok(serde_json::Value::Object(mut old)), Ok(serde_json::Value::Object(mut new))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    let mut changed = Vec::new();
    let tls_old = old
        .get_mut("http")
        .and_then(|h| h.as_object_mut()?.remove("tls"));
    let tls_new = new
        .get_mut("http")
        .and_then(|h| h.as_object_mut()?.remove("tls"));
    if tls_old != tls_new {
        changed.push("http.tls".to_owned());
    }
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        if old.get(key) != new.get(key) {
            changed.push(key.clone());
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_sections_names_tls_apart_from_the_rest_of_http() {
        let old = MasterConfig::default();
        let mut tls = old.clone();
        tls.http.tls = Some(dms_common::tls::ServerTlsConfig {
            cert: "c.pem".into(),
            key: "k.pem".into(),
            client_ca: None,
        });
        let mut moved = old.clone();
        moved.http.listen = "127.0.0.1:2000".parse().unwrap();
        moved.shutdown_timeout = dms_common::config::ConfigDuration::from_secs(9);
        assert!(changed_sections(&old, &old).is_empty());
        assert_eq!(changed_sections(&old, &tls), vec!["http.tls"]);
        assert_eq!(
            changed_sections(&old, &moved),
            vec!["http", "shutdown_timeout"]
        );
    }

    #[test]
    fn reloaded_schedules_may_name_only_running_watchlists_and_sources() {
        let parse = |yaml: &str| -> MasterConfig {
            dms_common::config::load_str(std::path::Path::new("t.yaml"), yaml, Vec::new()).unwrap()
        };
        let config = |us: &str, more: &str, selects: &str| {
            parse(&format!(
                "
sources: [{{type: yahoo, name: y}}]
watchlists:
  - {{name: us, source: y, symbols: [{us}]}}
{more}
schedules:
  - {{name: n, cron: '0 18 * * *', kind: update, {selects}}}
"
            ))
        };
        let current = config("AAPL", "", "watchlists: [us]");
        let same = config("AAPL", "", "watchlists: [us]");
        assert_eq!(schedules_fit_running_series(&current, &same), Ok(()));

        let added = config(
            "AAPL",
            "  - {name: eu, source: y, symbols: [SAP.DE]}",
            "watchlists: [eu]",
        );
        let e = schedules_fit_running_series(&current, &added).unwrap_err();
        assert!(
            e.starts_with("schedules[0].watchlists[0]") && e.contains("is new"),
            "{e}"
        );

        let changed = config("AAPL, MSFT", "", "watchlists: [us]");
        let e = schedules_fit_running_series(&current, &changed).unwrap_err();
        assert!(e.contains("changed"), "{e}");
    }
}
