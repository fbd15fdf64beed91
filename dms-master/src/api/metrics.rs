//! `GET /metrics`: the Prometheus text of every figure [`crate::metrics`] records, with the
//! gauges read at scrape time (journal size, store and replica lag, provider request rates)
//! refreshed first.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use dms_common::journal::Journal;
use metrics::gauge;

use crate::metrics::{install, lag_of};
use crate::replication::lag::replica_lags;
use crate::replication::nodes::NodeRegistry;

/// The state the scrape-time gauges are read from.
#[derive(Debug, Clone)]
pub struct MetricsSource {
    pub journal: Journal,
    /// The last journal entry the store applier applied.
    pub applied: tokio::sync::watch::Receiver<dms_common::journal::Seq>,
    pub nodes: NodeRegistry,
    /// The request rates of the rate-limited sources, by source name.
    pub request_rates: RequestRates,
}

/// Reads the current request rate of each rate-limited source (given by the server, so that
/// metrics, which the sources report to, do not depend on them).
#[derive(Clone)]
pub struct RequestRates(pub std::sync::Arc<dyn Fn() -> Vec<(String, f64)> + Send + Sync>);

impl std::fmt::Debug for RequestRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestRates")
    }
}

impl MetricsSource {
    /// Sets the gauges from the current state.
    pub async fn refresh(&self) {
        let head = self.journal.head();
        gauge!("dms_journal_head_seq").set(head.0 as f64);
        match self.journal.stats().await {
            Ok(s) => {
                gauge!("dms_journal_entries").set(s.entries as f64);
                gauge!("dms_journal_size_bytes").set(s.bytes as f64);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the journal's size"),
        }
        let applied = *self.applied.borrow();
        gauge!("dms_store_applied_seq").set(applied.0 as f64);
        let store = lag_of(&self.journal, applied).await;
        gauge!("dms_store_lag_entries").set(store.entries as f64);
        gauge!("dms_store_lag_seconds").set(store.seconds);
        for (source, rate) in (self.request_rates.0)() {
            gauge!("dms_provider_request_rate", "source" => source).set(rate);
        }
        for r in replica_lags(&self.journal, &self.nodes).await {
            gauge!("dms_replica_lag_entries", "node" => r.node.clone()).set(r.lag.entries as f64);
            gauge!("dms_replica_lag_seconds", "node" => r.node.clone()).set(r.lag.seconds);
            gauge!("dms_replica_connected", "node" => r.node).set(if r.connected {
                1.0
            } else {
                0.0
            });
        }
    }
}

/// The `GET /metrics` route.
pub fn router(source: MetricsSource) -> Router {
    install();
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(source)
}

async fn scrape(State(source): State<MetricsSource>) -> Response {
    source.refresh().await;
    dms_common::prometheus::response(dms_common::prometheus::render())
}
