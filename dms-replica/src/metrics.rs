//! The replica's Prometheus figures, served as text on `GET /metrics`.
//!
//! Gauges and the session and apply counters are read from the replication status when
//! `/metrics` is scraped; repairs are counted where they finish ([`crate::repair::counted`]). The recorder is installed
//! once per process by [`dms_common::prometheus::handle`].
//!
//! | metric | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `dms_replica_applied_seq` | gauge | | the replica's cursor: the last master journal entry applied to its store |
//! | `dms_replica_master_head_seq` | gauge | | the master's journal head, as last heard |
//! | `dms_replica_lag_entries` | gauge | | entries between the cursor and the master's head |
//! | `dms_replica_lag_seconds` | gauge | | how old the newest applied change was when the replica was last behind (0 in sync) |
//! | `dms_replica_connected` | gauge | | 1 while subscribed to the master (catching up or in sync) |
//! | `dms_replica_sessions_total` | counter | | subscribe sessions opened since start (each reconnect is one) |
//! | `dms_replica_batches_applied_total` | counter | | journal entries applied since start |
//! | `dms_replica_bars_applied_total` | counter | | bars applied since start |
//! | `dms_replica_repairs_total` | counter | `trigger` | repairs finished: `required` (the master asked) or `anti_entropy` (periodic or on demand) |
//! | `dms_replica_repair_buckets_pulled_total` | counter | | buckets pulled from the master by repairs |

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use metrics::{counter, gauge};

use crate::sync::{LinkState, Replicator};

/// The `GET /metrics` route.
pub fn router(r: Replicator) -> Router {
    dms_common::prometheus::handle();
    Router::new().route("/metrics", get(scrape)).with_state(r)
}

async fn scrape(State(r): State<Replicator>) -> Response {
    let s = r.status.get();
    gauge!("dms_replica_applied_seq").set(s.cursor as f64);
    gauge!("dms_replica_master_head_seq").set(s.master_head as f64);
    gauge!("dms_replica_lag_entries").set(s.lag_seq as f64);
    gauge!("dms_replica_lag_seconds").set(s.lag_seconds);
    let connected = matches!(s.state, LinkState::CatchingUp | LinkState::InSync);
    gauge!("dms_replica_connected").set(if connected { 1.0 } else { 0.0 });
    counter!("dms_replica_sessions_total").absolute(s.sessions);
    counter!("dms_replica_batches_applied_total").absolute(s.batches_applied);
    counter!("dms_replica_bars_applied_total").absolute(s.bars_applied);
    dms_common::prometheus::response(dms_common::prometheus::render())
}
