//! [`ReplicaStore`]: a replica read over its HTTP read API (`GET /api/data/series`, `GET
//! /api/data/bars`) as a read-only bar store, so the consistency check compares the master's
//! store with what a replica serves, bar by bar (`POST /api/data/check {"replica": NAME}`, a
//! replica configured under `targets:`). Redirects are not followed and the replica's error
//! texts are not repeated (only its status), so a check shows nothing of another host. The
//! replica's answers are JSON with every number in its shortest exact form and times in RFC
//! 3339, so the bars compare exactly.

use std::time::Duration;

use async_trait::async_trait;
use dms_common::store::digest::Digest;
use dms_common::store::{
    BarStore, BarStream, Capabilities, Result, SeriesOverview, StoreError, UpsertStats,
};
use dms_common::{Bar, SeriesBars, SeriesKey, Symbol, TimeRange, Timestamp};
use futures::StreamExt;
use serde_json::Value;

/// Most bars the replica serves in one page.
const MAX_PAGE: usize = 100_000;

/// A replica's read API as a read-only store.
#[derive(Debug, Clone)]
pub struct ReplicaStore {
    /// `http://host:port`, without a trailing slash.
    base: String,
    client: reqwest::Client,
    /// `Bearer <token>` for a replica with `auth`.
    authorization: Option<String>,
}

impl ReplicaStore {
    /// The replica a `targets:` entry describes (its token and CA files read now).
    pub fn new(
        target: &crate::data::targets::ReplicaTargetConfig,
    ) -> std::result::Result<ReplicaStore, String> {
        let url = &target.url;
        let base = url.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "{url:?} is not a replica's HTTP address (http://host:port)"
            ));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &target.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|_| format!("{}: not a PEM certificate", ca.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        let authorization = target
            .resolve_token("replica")
            .map_err(|i| format!("{}: {}", i.key, i.message))?
            .map(|t| format!("Bearer {}", t.expose()));
        Ok(ReplicaStore {
            base,
            client,
            authorization,
        })
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let unavailable =
            |e: String| StoreError::unavailable(format!("replica {}: {e}", self.base));
        let mut request = self.client.get(&url).query(query);
        if let Some(a) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, a);
        }
        let r = request
            .send()
            .await
            .map_err(|e| unavailable(e.without_url().to_string()))?;
        let status = r.status();
        if !status.is_success() {
            // Its text is the other host's to say, not ours to repeat.
            return Err(StoreError::refused(format!(
                "replica {}: {path} answered {status}",
                self.base
            )));
        }
        r.json()
            .await
            .map_err(|_| unavailable(format!("{path} did not answer JSON")))
    }
}

fn invalid(what: impl std::fmt::Display) -> StoreError {
    StoreError::refused(format!("a replica's answer: {what}"))
}

fn time(v: &Value) -> Result<Timestamp> {
    let s = v
        .as_str()
        .ok_or_else(|| invalid(format!("{v} is not a time")))?;
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| Timestamp(t.timestamp()))
        .map_err(|_| invalid(format!("{s:?} is not an RFC 3339 time")))
}

fn bar(v: &Value) -> Result<Bar> {
    let num = |k: &str| v[k].as_f64();
    let need = |k: &str| num(k).ok_or_else(|| invalid(format!("a bar without {k}: {v}")));
    let mut b = Bar::ohlcv(
        time(&v["ts"])?,
        need("open")?,
        need("high")?,
        need("low")?,
        need("close")?,
        need("volume")?,
    );
    b.adj_close = num("adj_close");
    b.turnover = num("turnover");
    b.open_interest = num("open_interest");
    Ok(b)
}

/// A time as a query value, when RFC 3339 can say it.
fn rfc3339(t: Timestamp) -> Option<String> {
    chrono::DateTime::from_timestamp(t.0, 0)
        .filter(|d| (1..=9999).contains(&chrono::Datelike::year(d)))
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

#[async_trait]
impl BarStore for ReplicaStore {
    fn backend(&self) -> &'static str {
        "replica"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }

    async fn upsert(&self, _batch: &[SeriesBars]) -> Result<UpsertStats> {
        Err(StoreError::refused(
            "a replica is read through its API only",
        ))
    }

    fn read_paged(&self, series: &SeriesKey, range: TimeRange, page_size: usize) -> BarStream {
        // An empty range holds no bars: not asked for (the replica refuses one as a bad
        // request).
        if range.is_empty() {
            return futures::stream::empty().boxed();
        }
        let this = self.clone();
        let key = series.clone();
        let limit = page_size.clamp(1, MAX_PAGE).to_string();
        let end = rfc3339(range.end);
        let first = rfc3339(range.start);
        futures::stream::unfold(Some(first), move |next| {
            let (this, key, limit, end) = (this.clone(), key.clone(), limit.clone(), end.clone());
            async move {
                let start = next?;
                let mut query = vec![
                    ("symbol", key.symbol.to_string()),
                    ("interval", key.interval.to_string()),
                    ("limit", limit),
                ];
                if let Some(s) = start {
                    query.push(("start", s));
                }
                if let Some(e) = end {
                    query.push(("end", e));
                }
                let page = async {
                    let body = match this.get("/api/data/bars", &query).await {
                        // A series the replica does not hold has no bars.
                        Err(e @ StoreError::Refused { .. }) if e.message().contains("404") => {
                            return Ok((Vec::new(), None));
                        }
                        other => other?,
                    };
                    let bars = body["data"]
                        .as_array()
                        .ok_or_else(|| invalid("no data"))?
                        .iter()
                        .map(bar)
                        .collect::<Result<Vec<Bar>>>()?;
                    let next = match &body["next_start"] {
                        Value::Null => None,
                        v => Some(time(v)?),
                    };
                    Ok((bars, next))
                }
                .await;
                match page {
                    Ok((bars, next)) => {
                        let after = next.map(rfc3339);
                        Some((Ok(bars), after))
                    }
                    Err(e) => Some((Err(e), None)),
                }
            }
        })
        .filter(|page| futures::future::ready(page.as_ref().map_or(true, |b| !b.is_empty())))
        .boxed()
    }

    async fn latest(&self, series: &SeriesKey) -> Result<Option<Bar>> {
        dms_common::store::latest_by_reading(self, series).await
    }

    async fn overview(&self) -> Result<Vec<SeriesOverview>> {
        let body = self.get("/api/data/series", &[]).await?;
        body["data"]
            .as_array()
            .ok_or_else(|| invalid("no data"))?
            .iter()
            .map(|s| {
                let symbol =
                    Symbol::new(s["symbol"].as_str().unwrap_or_default()).map_err(invalid)?;
                let interval = s["interval"]
                    .as_str()
                    .unwrap_or_default()
                    .parse()
                    .map_err(|_| invalid(format!("bad interval in {s}")))?;
                let count = s["count"].as_u64().ok_or_else(|| invalid("no count"))?;
                let hash = s["digest"]
                    .as_str()
                    .and_then(|h| u128::from_str_radix(h, 16).ok())
                    .unwrap_or_default();
                Ok(SeriesOverview {
                    key: SeriesKey::new(symbol, interval),
                    count,
                    first: time(&s["first"])?,
                    last: time(&s["last"])?,
                    digest: Digest { count, hash },
                })
            })
            .collect()
    }

    async fn delete(&self, _series: &SeriesKey, _range: TimeRange) -> Result<u64> {
        Err(StoreError::refused(
            "a replica is read through its API only",
        ))
    }

    async fn check(&self) -> Result<()> {
        self.get("/api/data/series", &[]).await.map(drop)
    }
}

/// A replica read over its HTTP API passes the `BarStore` conformance suite: each case writes
/// into the replica's own store, the replica's real read API (`dms_replica::http`) serves it
/// on loopback, and every read the case makes goes through [`ReplicaStore`].
#[cfg(test)]
mod conformance {
    use std::sync::Arc;

    use dms_common::store::SharedStore;
    use dms_common::store::sqlite::SqliteStore;
    use dms_store_conformance::published::{Publish, Published};

    use super::ReplicaStore;
    use crate::data::targets::ReplicaTargetConfig;

    /// The replica's read API as a store, made once: it reads the written store live.
    #[derive(Debug)]
    struct Served(SharedStore);

    #[async_trait::async_trait]
    impl Publish for Served {
        async fn publish(&self, _written: &SharedStore) -> SharedStore {
            self.0.clone()
        }
    }

    /// The case's files and the replica's server, stopped when the case ends.
    struct Guard {
        _dir: tempfile::TempDir,
        server: tokio::task::JoinHandle<()>,
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            self.server.abort();
        }
    }

    async fn make(case: &'static str) -> (SharedStore, Guard) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store: SharedStore =
            Arc::new(SqliteStore::open(dir.path().join(format!("{case}.db"))).expect("store"));
        let config: dms_replica::config::ReplicaConfig =
            serde_json::from_value(serde_json::json!({})).expect("the default replica config");
        let replicator = dms_replica::sync::Replicator {
            config: Arc::new(config),
            token: None,
            store: store.clone(),
            state: dms_replica::state::ReplicaState::open(&dir.path().join("state.db"))
                .expect("state file"),
            status: Default::default(),
            anti_entropy_now: Arc::default(),
            apply_lock: Arc::default(),
            http_address: String::new(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, dms_replica::http::router(replicator)).await;
        });
        let target: ReplicaTargetConfig =
            serde_json::from_value(serde_json::json!({ "url": format!("http://{addr}") }))
                .expect("a replica target");
        let reader: SharedStore = Arc::new(ReplicaStore::new(&target).expect("the replica store"));
        let guard = Guard { _dir: dir, server };
        (Arc::new(Published::new(store, Served(reader))), guard)
    }

    dms_store_conformance::store_conformance_tests!(make);
}
