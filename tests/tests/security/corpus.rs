//! A corpus of hostile requests (REST and gRPC): bad JSON, unicode and control characters,
//! traversal, huge and negative numbers, injection attempts, garbage files in every import
//! format. Each must be answered as a refusal (a JSON 4xx, a gRPC `INVALID_ARGUMENT`) or, for
//! a read or a dry run, an ordinary answer; never a 5xx, a dropped connection or a write.

use std::path::Path;

use dms_e2e::MasterProcess;

use crate::files;

/// What the corpus saw.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) total: usize,
    pub(crate) refused: usize,
    pub(crate) answered: usize,
    pub(crate) server_errors: usize,
    pub(crate) failures: Vec<String>,
}

impl Stats {
    fn fail(&mut self, what: String) {
        self.server_errors += 1;
        if self.failures.len() < 20 {
            self.failures.push(what);
        }
    }
}

/// Values that are wrong wherever a symbol, interval, date, number or name is expected.
fn hostile_values() -> Vec<String> {
    vec![
        String::new(),
        "\u{0}".into(),
        "\u{202e}GOOG".into(),
        "../../../../etc/passwd".into(),
        "..%2f..%2fetc%2fpasswd".into(),
        "a".repeat(30_000),
        "-1".into(),
        "-9223372036854775809".into(),
        "99999999999999999999999999".into(),
        "1e309".into(),
        "NaN".into(),
        "\"".into(),
        "{}".into(),
        "null".into(),
        "🦀🦀🦀".into(),
        "GOOG\r\nX-Injected: 1".into(),
        "<script>alert(1)</script>".into(),
        "'; DROP TABLE bars; --".into(),
        "GOOG\" OR 1=1 --".into(),
        "0000-00-00".into(),
    ]
}

fn encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs the corpus against `master` (port `port`) with the full token; `imports` is its
/// allowed import directory.
pub(crate) async fn run(master: &MasterProcess, port: u16, token: &str, imports: &Path) -> Stats {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let mut stats = Stats::default();
    let values = hostile_values();

    // Reads with hostile parameters: any 2xx or JSON 4xx, never a 5xx.
    let reads = [
        "/api/data/bars?symbol={v}&interval=1d",
        "/api/data/bars?symbol=BTC-USD&interval={v}&start={v}",
        "/api/data/gaps?symbol={v}&interval={v}",
        "/api/data/export?symbols={v}&format=csv",
        "/api/data/export?symbols=BTC-USD&interval=1mo&format={v}&start={v}",
        "/api/data/tasks?status={v}&limit={v}",
        "/api/data/tasks/{v}",
        "/api/data/series?limit={v}&skip={v}",
        "/api/nodes/{v}/history?limit={v}",
        "/api/schedules/{v}",
        "/api/sources/{v}/tables",
        "/api/data/actions?symbol={v}&interval={v}",
    ];
    for template in reads {
        for v in &values {
            let path = template.replace("{v}", &encode(v));
            let r = client
                .get(master.url(&path))
                .bearer_auth(token)
                .send()
                .await;
            check(&mut stats, &format!("GET {template} {:?}", cut(v)), r, true).await;
        }
    }

    // Writes with bodies that are not valid requests: JSON 4xx only.
    let huge = format!("{{\"symbols\": [\"{}\"]}}", "A".repeat(1_900_000));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies: Vec<String> = vec![
        "{".into(),
        "[".into(),
        "nul".into(),
        "\u{0}".into(),
        r#"{"symbols": 5}"#.into(),
        r#"{"symbols": ["../../etc/passwd"]}"#.into(),
        r#"{"symbols": ["GOOG\u0000"]}"#.into(),
        r#"{"interval": "1y"}"#.into(),
        r#"{"start_date": "-999999-01-01", "symbols": ["GOOG"]}"#.into(),
        r#"{"limit": -1}"#.into(),
        r#"{"days": 4294967296}"#.into(),
        r#"{"unknown_field": 1}"#.into(),
        deep,
        huge,
    ];
    let writes = [
        "/api/data/import",
        "/api/data/update",
        "/api/data/backfill",
        "/api/data/validate",
        "/api/data/migrate",
        "/api/data/check",
        "/api/data/delete",
        "/api/data/restore",
        "/api/data/backup",
        "/api/schedules/none/trigger",
    ];
    for path in writes {
        for body in &bodies {
            if body.len() > 1 << 20 && !path.starts_with("/api/data/") {
                // Answered before the body is read: the client's write would be cut.
                continue;
            }
            let r = client
                .post(master.url(path))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            check(
                &mut stats,
                &format!("POST {path} {:?}", cut(body)),
                r,
                false,
            )
            .await;
        }
    }

    // Import parameters that are wrong, and garbage files: uploaded and named by path.
    for v in &values {
        let query = format!(
            "/api/data/import-file?filename=x.csv&dry_run=true&timezone={0}&mode=upsert&delimiter=,",
            encode(v)
        );
        let r = client
            .post(master.url(&query))
            .bearer_auth(token)
            .header("content-type", "application/octet-stream")
            .body("date,open,high,low,close,volume\n")
            .send()
            .await;
        check(
            &mut stats,
            &format!("import-file params {:?}", cut(v)),
            r,
            false,
        )
        .await;
    }
    for (name, bytes) in files::garbage() {
        let r = client
            .post(master.url(&format!(
                "/api/data/import-file?filename={name}&dry_run=true&symbol=X&interval=1d"
            )))
            .bearer_auth(token)
            .header("content-type", "application/octet-stream")
            .body(bytes.clone())
            .send()
            .await;
        check(&mut stats, &format!("upload {name}"), r, true).await;
        let path = imports.join(&name);
        std::fs::write(&path, &bytes).unwrap();
        let r = client
            .post(master.url(&format!(
                "/api/data/import-file?path={}&dry_run=true&symbol=X&interval=1d",
                encode(&path.display().to_string())
            )))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .send()
            .await;
        check(&mut stats, &format!("path {name}"), r, true).await;
    }

    grpc(&mut stats, port, token, &values).await;
    assert!(
        stats.failures.is_empty(),
        "hostile requests answered badly: {:#?}",
        stats.failures
    );
    stats
}

fn cut(v: &str) -> String {
    v.chars().take(40).collect()
}

/// Records one REST answer: a JSON 4xx is a refusal; a 2xx is fine only where `may_answer`
/// (reads, dry runs); a 5xx, a non-JSON error or no answer is a failure.
async fn check(
    stats: &mut Stats,
    what: &str,
    r: reqwest::Result<reqwest::Response>,
    may_answer: bool,
) {
    stats.total += 1;
    let r = match r {
        Ok(r) => r,
        Err(e) => return stats.fail(format!("{what}: no answer: {}", e.without_url())),
    };
    let code = r.status().as_u16();
    let body = r.bytes().await.unwrap_or_default();
    match code {
        200..=299 if may_answer => stats.answered += 1,
        400..=499 => {
            let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
            match json {
                Some(v) if v["success"] == false && v["error"].is_string() => {
                    let message = v["error"].as_str().unwrap_or_default();
                    // At most an excerpt of the request's own text (200 characters).
                    let quoted_too_much = ["a", "A", "9", "\u{0}"]
                        .iter()
                        .any(|c| message.contains(&c.repeat(201)));
                    if message.chars().count() > 1_001 || quoted_too_much {
                        stats.fail(format!(
                            "{what}: {code} with a {}-character message",
                            message.chars().count()
                        ));
                    } else {
                        stats.refused += 1;
                    }
                }
                _ => stats.fail(format!(
                    "{what}: {code} without the JSON envelope: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                )),
            }
        }
        _ => stats.fail(format!(
            "{what}: {code}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )),
    }
}

/// Admin gRPC calls with hostile arguments: `INVALID_ARGUMENT` only.
async fn grpc(stats: &mut Stats, port: u16, token: &str, values: &[String]) {
    use dms_common::pb;
    use dms_common::pb::admin_client::AdminClient;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let mut admin = AdminClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", bearer.clone());
        Ok(req)
    })
    .max_decoding_message_size(64 << 20);
    let mut record = |what: String, r: Result<(), tonic::Status>| {
        stats.total += 1;
        match r {
            Err(s)
                if s.code() == tonic::Code::InvalidArgument
                    && s.message().chars().count() <= 1_001 =>
            {
                stats.refused += 1
            }
            Err(s) if s.message().chars().count() > 1_001 => {
                stats.fail(format!("{what}: a {}-character message", s.message().len()))
            }
            Err(s) => stats.fail(format!("{what}: {:?} {}", s.code(), cut(s.message()))),
            Ok(()) => stats.fail(format!("{what}: accepted")),
        }
    };
    for v in values {
        // Every value below is made invalid (a suffix no symbol or interval takes).
        let bad = format!("{v}\u{0}/");
        let r = admin
            .get_bars(pb::GetBarsRequest {
                symbol: bad.clone(),
                interval: Some("1d".into()),
                ..Default::default()
            })
            .await
            .map(|_| ());
        record(format!("GetBars symbol {:?}", cut(v)), r);
        let r = admin
            .get_bars(pb::GetBarsRequest {
                symbol: "BTC-USD".into(),
                interval: Some(bad.clone()),
                ..Default::default()
            })
            .await
            .map(|_| ());
        record(format!("GetBars interval {:?}", cut(v)), r);
        let r = admin
            .delete_bars(pb::DeleteBarsRequest {
                symbol: "BTC-USD".into(),
                interval: bad.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ());
        record(format!("DeleteBars interval {:?}", cut(v)), r);
        let r = admin
            .start_task(pb::StartTaskRequest {
                kind: pb::TaskKind::Update as i32,
                params: Some(pb::TaskParams {
                    symbols: vec![bad.clone()],
                    ..Default::default()
                }),
            })
            .await
            .map(|_| ());
        record(format!("StartTask symbols {:?}", cut(v)), r);
        let r = admin
            .import_file(pb::ImportFileRequest {
                path: format!("relative/{bad}"),
                dry_run: true,
                ..Default::default()
            })
            .await
            .map(|_| ());
        record(format!("ImportFile path {:?}", cut(v)), r);
    }
}
