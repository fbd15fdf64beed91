//! `InfluxClient`: the HTTP side of the InfluxDB store. Writes line protocol (gzip), runs
//! InfluxQL over `/query`, retries what may pass on a second try, and tells transient errors from
//! permanent ones.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use serde::Deserialize;

use super::query;
use crate::config::Secret;
use crate::store::StoreError;
use crate::time::{TimeRange, Timestamp};

/// How many times a request is sent before a transient error is returned.
const ATTEMPTS: u32 = 5;
/// The first retry delay; each next one doubles.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Where points go and whom the server sees.
#[derive(Debug, Clone)]
pub enum InfluxTarget {
    /// InfluxDB 1.x: a database and retention policy, optional user and password.
    V1 {
        database: String,
        retention_policy: String,
        username: Option<String>,
        password: Option<Secret>,
    },
    /// InfluxDB 2.x / 3.x: an organization and bucket with a token. Queries go through the v1
    /// compatibility `/query` endpoint with the bucket as the database.
    V2 {
        org: String,
        bucket: String,
        token: Secret,
    },
}

/// One statement's answer from `/query`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StatementResult {
    #[serde(default)]
    pub series: Vec<QuerySeries>,
    /// The server cut the answer short (its `max-row-limit`): more rows match.
    #[serde(default)]
    pub partial: bool,
    #[serde(default)]
    pub error: Option<String>,
}

/// One series of a query answer: its tags (with `GROUP BY`), columns and rows.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct QuerySeries {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub columns: Vec<String>,
    #[serde(default)]
    pub values: Vec<Vec<serde_json::Value>>,
    /// The server cut this series short (its `max-row-limit`): more rows match.
    #[serde(default)]
    pub partial: bool,
}

#[derive(Deserialize)]
struct QueryResponse {
    #[serde(default)]
    results: Vec<StatementResult>,
    #[serde(default)]
    error: Option<String>,
}

/// The HTTP client of one InfluxDB server.
#[derive(Debug, Clone)]
pub struct InfluxClient {
    http: reqwest::Client,
    base: String,
    target: InfluxTarget,
}

impl InfluxClient {
    /// A client of the server at `url` (e.g. `http://127.0.0.1:8086`).
    pub fn new(url: &str, target: InfluxTarget) -> Result<Self, StoreError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| StoreError::refused(format!("InfluxDB client: {e}")))?;
        Ok(InfluxClient {
            http,
            base: url.trim_end_matches('/').to_owned(),
            target,
        })
    }

    /// The database (v1) or bucket (v2) queries run against.
    pub fn database(&self) -> &str {
        match &self.target {
            InfluxTarget::V1 { database, .. } => database,
            InfluxTarget::V2 { bucket, .. } => bucket,
        }
    }

    /// Whether the server is written through the v2 API.
    pub fn is_v2(&self) -> bool {
        matches!(self.target, InfluxTarget::V2 { .. })
    }

    /// `POST /api/v2/delete` (2.x): removes the points matching `predicate` in `range`
    /// (half-open; whole seconds).
    pub async fn delete_v2(&self, range: TimeRange, predicate: &str) -> Result<(), StoreError> {
        let InfluxTarget::V2 { org, bucket, .. } = &self.target else {
            return Err(StoreError::refused(
                "/api/v2/delete needs an org and a bucket (api: v2)",
            ));
        };
        if range.is_empty() {
            return Ok(());
        }
        let body = delete_body(range, predicate);
        let url = format!("{}/api/v2/delete", self.base);
        self.send("delete", || {
            self.authorize(self.http.post(&url))
                .query(&[("org", org.as_str()), ("bucket", bucket.as_str())])
                .json(&body)
        })
        .await
        .map(|_| ())
    }

    /// The retention policy to qualify measurements with (v1 only).
    pub fn retention_policy(&self) -> Option<&str> {
        match &self.target {
            InfluxTarget::V1 {
                retention_policy, ..
            } => Some(retention_policy),
            InfluxTarget::V2 { .. } => None,
        }
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.target {
            // HTTP basic auth, which InfluxDB 1.x takes like the `u`/`p` parameters, keeps the
            // password out of URLs (and so out of error messages and proxy logs).
            InfluxTarget::V1 {
                username: Some(u),
                password,
                ..
            } => req.basic_auth(u, Some(password.as_ref().map(|p| p.expose()).unwrap_or(""))),
            InfluxTarget::V1 { .. } => req,
            InfluxTarget::V2 { token, .. } => req.header(
                reqwest::header::AUTHORIZATION,
                format!("Token {}", token.expose()),
            ),
        }
    }

    /// Writes line protocol (timestamps in seconds), gzip-compressed.
    pub async fn write(&self, lines: &str) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(lines.len() / 4),
            flate2::Compression::fast(),
        );
        gz.write_all(lines.as_bytes())
            .map_err(|e| StoreError::refused(format!("gzip: {e}")))?;
        let body = bytes_of(gz.finish())?;
        let (path, params): (&str, Vec<(&str, &str)>) = match &self.target {
            InfluxTarget::V1 {
                database,
                retention_policy,
                ..
            } => (
                "/write",
                vec![
                    ("db", database),
                    ("rp", retention_policy),
                    ("precision", "s"),
                ],
            ),
            InfluxTarget::V2 { org, bucket, .. } => (
                "/api/v2/write",
                vec![("org", org), ("bucket", bucket), ("precision", "s")],
            ),
        };
        let url = format!("{}{path}", self.base);
        self.send("write", || {
            self.authorize(self.http.post(&url))
                .query(&params)
                .header(reqwest::header::CONTENT_ENCODING, "gzip")
                .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(body.clone())
        })
        .await
        .map(|_| ())
    }

    /// Runs InfluxQL statements (`;`-separated) and returns one result per statement. A
    /// statement that fails makes the whole call fail (permanently: the query cannot succeed).
    pub async fn query(&self, statements: &str) -> Result<Vec<StatementResult>, StoreError> {
        let url = format!("{}/query", self.base);
        let db = self.database().to_owned();
        let text = self
            .send("query", || {
                self.authorize(self.http.post(&url)).query(&[
                    ("db", db.as_str()),
                    ("epoch", "s"),
                    ("q", statements),
                ])
            })
            .await?;
        let response: QueryResponse = serde_json::from_str(&text).map_err(|e| {
            StoreError::refused(format!("InfluxDB answer is not the expected JSON: {e}"))
        })?;
        if let Some(e) = response.error {
            return Err(StoreError::refused(format!("InfluxDB query failed: {e}")));
        }
        if let Some(e) = response.results.iter().find_map(|r| r.error.as_ref()) {
            return Err(StoreError::refused(format!(
                "InfluxDB query failed: {e} (in {})",
                abbreviate(statements)
            )));
        }
        Ok(response.results)
    }

    /// `GET /ping`: the server answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let url = format!("{}/ping", self.base);
        self.send("ping", || self.http.get(&url)).await.map(|_| ())
    }

    /// Sends a request, retrying connection errors and 5xx answers with a doubling delay; the
    /// body of a successful answer is returned.
    async fn send(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<String, StoreError> {
        let mut delay = FIRST_RETRY_DELAY;
        let mut attempt = 1;
        loop {
            let error = match build().send().await {
                Ok(resp) if resp.status().is_success() => {
                    return resp.text().await.map_err(|e| {
                        StoreError::unavailable(format!(
                            "InfluxDB {what}: reading the answer: {}",
                            e.without_url()
                        ))
                    });
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    StoreError::classified(
                        status.is_server_error() || status.as_u16() == 429,
                        format!("InfluxDB {what}: {status}: {}", describe_error(&body)),
                    )
                }
                Err(e) => StoreError::unavailable(format!(
                    "InfluxDB {what} at {}: {}",
                    self.base,
                    e.without_url()
                )),
            };
            if !error.is_transient() || attempt >= ATTEMPTS {
                return Err(error);
            }
            tracing::debug!(%error, attempt, "retrying an InfluxDB request");
            tokio::time::sleep(delay).await;
            delay *= 2;
            attempt += 1;
        }
    }
}

/// The JSON body of a v2 delete of `range`: its `stop` is inclusive, so it is the last second
/// of the half-open range.
pub fn delete_body(range: TimeRange, predicate: &str) -> serde_json::Value {
    let clamp = |s: i64| Timestamp(s.clamp(query::MIN_SECS, query::MAX_SECS)).to_rfc3339();
    serde_json::json!({
        "start": clamp(range.start.0),
        "stop": clamp(range.end.0.saturating_sub(1)),
        "predicate": predicate,
    })
}

fn bytes_of(r: std::io::Result<Vec<u8>>) -> Result<bytes::Bytes, StoreError> {
    r.map(bytes::Bytes::from)
        .map_err(|e| StoreError::refused(format!("gzip: {e}")))
}

/// The `error` of an InfluxDB error body, with the points a partial write dropped called out.
pub fn describe_error(body: &str) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .or(v.get("message"))?
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| body.trim().to_owned());
    match dropped_points(&message) {
        Some(n) => format!("partial write, {n} points dropped: {message}"),
        None => message,
    }
}

/// `N` of the `dropped=N` a partial write reports.
pub fn dropped_points(message: &str) -> Option<u64> {
    let rest = &message[message.find("dropped=")? + "dropped=".len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn abbreviate(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_writes_report_the_points_dropped() {
        let body = r#"{"error":"partial write: field type conflict: input field \"close\" on measurement \"bars\" is type integer, already exists as type float dropped=3"}"#;
        assert_eq!(dropped_points(&describe_error(body)), Some(3));
        assert!(describe_error(body).starts_with("partial write, 3 points dropped: "));
        assert_eq!(describe_error("not json\n"), "not json");
        assert_eq!(dropped_points("no count"), None);
    }

    /// A server answering each connection with the next status of `statuses`.
    async fn scripted_server(statuses: Vec<&'static str>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            for status in statuses {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 8192];
                let _ = conn.read(&mut buf).await;
                let answer =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = conn.write_all(answer.as_bytes()).await;
            }
        });
        url
    }

    fn v1() -> InfluxTarget {
        InfluxTarget::V1 {
            database: "dms".into(),
            retention_policy: "dms".into(),
            username: None,
            password: None,
        }
    }

    #[tokio::test]
    async fn server_errors_are_retried_within_the_call() {
        let url = scripted_server(vec![
            "503 Service Unavailable",
            "502 Bad Gateway",
            "204 No Content",
        ])
        .await;
        InfluxClient::new(&url, v1()).unwrap().ping().await.unwrap();
    }

    #[tokio::test]
    async fn lasting_server_errors_are_transient_and_client_errors_permanent_at_once() {
        let url = scripted_server(vec!["500 Internal Server Error"; ATTEMPTS as usize]).await;
        let err = InfluxClient::new(&url, v1())
            .unwrap()
            .ping()
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
        // One 400, then a success that must never be asked for.
        let url = scripted_server(vec!["400 Bad Request", "204 No Content"]).await;
        let err = InfluxClient::new(&url, v1())
            .unwrap()
            .ping()
            .await
            .unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert!(err.to_string().contains("400"), "{err}");
    }

    #[test]
    fn a_v2_delete_covers_the_half_open_range_with_an_inclusive_stop() {
        let body = delete_body(
            TimeRange::new(Timestamp(86_400), Timestamp(2 * 86_400)),
            "_measurement=\"bars\"",
        );
        assert_eq!(body["start"], "1970-01-02T00:00:00Z");
        assert_eq!(body["stop"], "1970-01-02T23:59:59Z");
        assert_eq!(body["predicate"], "_measurement=\"bars\"");
        let all = delete_body(TimeRange::all(), "");
        assert!(all["start"].as_str().unwrap().starts_with("1677-"), "{all}");
        assert!(all["stop"].as_str().unwrap().starts_with("2262-"), "{all}");
    }
}
