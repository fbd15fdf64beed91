//! Security of the real daemons against an attacker on the network and against web pages a
//! user opens: every attack of the secure-by-default issue is run against a running master and
//! must fail safely. What was (not) changed is read from the store's SQLite file and the state
//! file directly, never from the daemon's own answers.
//!
//! Three masters: one open on loopback (no tokens: what a browser on the same machine reaches),
//! one guarded (full and read-only tokens, an allowed import directory, a small upload cap),
//! and start-ups that must be refused.

mod corpus;
mod files;

use std::path::{Path, PathBuf};
use std::time::Duration;

use dms_e2e::{MasterProcess, SAMPLE_SOURCE, copy_sample_data, master_config, run_master_command};
use serde_json::Value;

/// The full-access token of the guarded master.
const FULL: &str = "full-access-token-0123456789abcdef0123456789abcdef";
/// Its read-only token.
const READ: &str = "read-only-token-0123456789abcdef0123456789abcdef";

const WAIT: Duration = Duration::from_secs(60);

/// What the store file holds: (series, bars, a hash of every bar), read with SQLite itself.
fn store_fingerprint(workdir: &Path) -> (u64, u64, u64) {
    use std::hash::{Hash, Hasher};
    let db = rusqlite::Connection::open_with_flags(
        workdir.join("data/bars.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let series: u64 = db
        .query_row("SELECT count(*) FROM series", [], |r| r.get(0))
        .unwrap();
    let mut stmt = db
        .prepare(
            "SELECT series_id, ts, open, high, low, close, volume FROM bars ORDER BY series_id, ts",
        )
        .unwrap();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut bars = 0u64;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                [
                    r.get::<_, f64>(2)?,
                    r.get::<_, f64>(3)?,
                    r.get::<_, f64>(4)?,
                    r.get::<_, f64>(5)?,
                    r.get::<_, f64>(6)?,
                ],
            ))
        })
        .unwrap();
    for row in rows {
        let (series, ts, values) = row.unwrap();
        (series, ts).hash(&mut hasher);
        for v in values {
            v.to_bits().hash(&mut hasher);
        }
        bars += 1;
    }
    (series, bars, hasher.finish())
}

/// Tasks in the state file, read with SQLite itself.
fn task_rows(workdir: &Path) -> u64 {
    let db = rusqlite::Connection::open_with_flags(
        workdir.join("data/master-state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
        .unwrap()
}

/// Sends `request` as it is over a new connection and reads the whole answer (the request
/// should say `connection: close`); returns the status code and the body.
async fn raw(port: u16, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer));
    let _ = read.await;
    dms_e2e::http_answer(&answer)
}

/// Sends `head`, then a chunked body of `len` bytes while reading the answer (a daemon may
/// answer and close before the body is sent); returns the status code and the body.
async fn raw_streamed(port: u16, head: &[u8], len: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut rx, mut tx) = stream.into_split();
    tx.write_all(head).await.unwrap();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'7'; 64 << 10];
        let mut sent = 0;
        while sent < len {
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if tx.write_all(&framed).await.is_err() {
                return;
            }
            sent += chunk.len();
        }
        let _ = tx.write_all(b"0\r\n\r\n").await;
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), rx.read_to_end(&mut answer)).await;
    writer.abort();
    dms_e2e::http_answer(&answer)
}

/// A client that sends no token.
fn anonymous() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Asserts an answer is a JSON error envelope with a 4xx status; returns its message.
fn refused(code: u16, body: &str, what: &str) -> String {
    assert!(
        (400..500).contains(&code),
        "{what}: expected a 4xx refusal, got {code}: {body}"
    );
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{what}: the {code} answer is not JSON ({e}): {body}"));
    assert_eq!(v["success"], false, "{what}: {body}");
    v["error"].as_str().unwrap_or_default().to_owned()
}

async fn start_open_master(dir: &Path) -> MasterProcess {
    copy_sample_data(&dir.join("sample-data"));
    let config = master_config(&format!(
        "{SAMPLE_SOURCE}
schedules:
  - name: nightly
    cron: '0 0 3 * * *'
    kind: update
    source: sample
"
    ));
    let master = MasterProcess::start(dir, &config).await.unwrap();
    master.wait_imported(WAIT).await.unwrap();
    master
}

/// The guarded master: tokens, `imports/` as the one allowed directory, 4 MiB uploads.
async fn start_guarded_master(dir: &Path) -> (MasterProcess, PathBuf) {
    copy_sample_data(&dir.join("sample-data"));
    let imports = dir.join("imports");
    std::fs::create_dir_all(&imports).unwrap();
    let imports = imports.canonicalize().unwrap();
    std::fs::write(dir.join("full.token"), format!("{FULL}\n")).unwrap();
    // An upload left by a master killed during its import: removed at the next start.
    std::fs::create_dir_all(dir.join("data/uploads")).unwrap();
    std::fs::write(
        dir.join("data/uploads/20261207T000000-0-left.csv"),
        "date,open\n",
    )
    .unwrap();
    let config = master_config(&format!(
        "{SAMPLE_SOURCE}
auth:
  token_file: ./full.token
  read_only:
    token: {READ}
file_import:
  allowed_dirs: [{}]
  max_upload_bytes: 4MiB
  min_free_bytes: 1MiB
targets:
  copy:
    type: sqlite
    path: {}
",
        imports.display(),
        dir.join("copy.db").display()
    ));
    let master = MasterProcess::start_with(dir, &config, dms_e2e::free_port(), |c| c.token(READ))
        .await
        .unwrap();
    master.wait_imported(WAIT).await.unwrap();
    (master, imports)
}

/// A web page, or a client on the same machine, against a master without tokens: nothing a
/// browser can send without a CORS preflight changes anything, and nothing the API names is
/// read from the machine's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_master_refuses_cross_site_writes_and_server_files() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_open_master(dir.path()).await;
    let port = master.port;
    let before = store_fingerprint(dir.path());
    assert!(before.1 > 0, "the sample import stored bars: {before:?}");
    let tasks_before = task_rows(dir.path());
    let client = anonymous();

    // Plain HTML forms and text/plain bodies, with and without a body, on every writing path.
    let writes = [
        "/api/data/update",
        "/api/data/import",
        "/api/data/backup",
        "/api/data/validate",
        "/api/data/tasks/some-task/cancel",
        "/api/schedules/nightly/pause",
        "/api/schedules/nightly/trigger",
        "/api/nodes/replica-1/verify",
        "/api/data/delete",
        "/api/data/restore",
    ];
    for path in writes {
        for content_type in [
            None,
            Some("application/x-www-form-urlencoded"),
            Some("text/plain"),
            Some("multipart/form-data; boundary=x"),
        ] {
            for body in ["", "symbol=GOOG"] {
                let mut req = client.post(master.url(path)).body(body.to_owned());
                if let Some(ct) = content_type {
                    req = req.header("content-type", ct);
                }
                let r = req.send().await.unwrap();
                let code = r.status().as_u16();
                let text = r.text().await.unwrap();
                let message = refused(code, &text, &format!("POST {path} as {content_type:?}"));
                assert_eq!(code, 415, "POST {path} {content_type:?} {body:?}: {text}");
                assert!(message.contains("application/json"), "{message}");
            }
        }
    }
    let r = client
        .delete(master.url("/api/nodes/replica-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415, "DELETE without a JSON type");

    // A no-cors fetch of a gRPC method over HTTP/1.1 with text/plain: refused, nothing deleted.
    let delete_bars = [
        0u8, 0, 0, 0, 12, 10, 4, b'G', b'O', b'O', b'G', 18, 2, b'1', b'd',
    ];
    for ct in ["text/plain", "application/grpc", "application/grpc+proto"] {
        let mut req = format!(
            "POST /dms.v1.Admin/DeleteBars HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: {ct}\r\nte: trailers\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            delete_bars.len()
        )
        .into_bytes();
        req.extend_from_slice(&delete_bars);
        let (code, body) = raw(port, &req).await;
        refused(code, &body, &format!("HTTP/1.1 DeleteBars as {ct}"));
    }
    let r = client
        .post(master.url("/dms.v1.Admin/DeleteBars"))
        .header("content-type", "text/plain")
        .body(delete_bars.to_vec())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());

    // A page of another origin, and a rebinding name, are refused even for reads.
    let json = |req: reqwest::RequestBuilder| {
        req.header("content-type", "application/json")
            .body(r#"{"only_existing": true}"#)
    };
    for origin in ["http://evil.example", "null", "http://127.0.0.1:1"] {
        let r = json(client.post(master.url("/api/data/update")))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(code, 403, "Origin {origin}: {text}");
        assert!(refused(code, &text, origin).contains("allowed_origins"));
    }
    let own = client
        .post(master.url("/api/data/validate"))
        .header("content-type", "application/json")
        .body("{}")
        .header("origin", format!("http://127.0.0.1:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        own.status().as_u16(),
        202,
        "the daemon's own origin is served"
    );
    for host in ["evil.example", "evil.example:11183", "rebind.attacker.test"] {
        let (code, body) = raw(
            port,
            format!("GET /api/data/status HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(code, 403, "Host {host}: {body}");
        assert!(refused(code, &body, host).contains("server_names"));
    }
    let (code, _) = raw(
        port,
        format!(
            "GET /api/data/status HTTP/1.1\r\nhost: localhost:{port}\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(code, 200, "localhost is this machine");

    // Both Content-Length and Transfer-Encoding: refused, nothing queued.
    for order in [
        "content-length: 4\r\ntransfer-encoding: chunked",
        "transfer-encoding: chunked\r\ncontent-length: 4",
    ] {
        let req = format!(
            "POST /api/data/validate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{order}\r\nconnection: close\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
        );
        let (code, body) = raw(port, req.as_bytes()).await;
        assert_eq!(code, 400, "{order}: {body}");
        assert!(body.contains("Transfer-Encoding"), "{body}");
    }

    // Server files: no path is read while no directory is allowed.
    for query in [
        "path=/etc/passwd&format=csv&dry_run=true",
        "path=/etc/passwd&format=csv&dry_run=true&map.time=root&delimiter=:",
        "path=/proc/self/environ&format=csv&dry_run=true",
    ] {
        let r = json(client.post(master.url(&format!("/api/data/import-file?{query}"))))
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        let text = r.text().await.unwrap();
        let message = refused(code, &text, query);
        assert!(message.contains("allowed_dirs"), "{message}");
        assert!(!text.contains("root:"), "no content of /etc/passwd: {text}");
    }

    let after = store_fingerprint(dir.path());
    assert_eq!(before, after, "the store is unchanged");
    // Only the one same-origin validate was queued.
    assert_eq!(task_rows(dir.path()), tasks_before + 1);
    assert!(master.get("/healthz").await.is_ok());
}

/// An attacker with network access and at most the read-only token against a master with
/// tokens: every endpoint asks for a token, server files stay unread, hostile files and
/// uploads are refused without harm, replication is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_master_refuses_every_attack() {
    let dir = tempfile::tempdir().unwrap();
    let (master, imports) = start_guarded_master(dir.path()).await;
    let port = master.port;
    let before = store_fingerprint(dir.path());
    let client = anonymous();

    // Without a token only the probes answer.
    for path in [
        "/api/data/status",
        "/api/data/tasks",
        "/api/data/series",
        "/api/data/overview",
        "/api/data/bars?symbol=BTC-USD&interval=1mo",
        "/api/data/export?format=csv",
        "/api/sources/sample/tables",
        "/api/nodes",
        "/api/schedules",
        "/metrics",
    ] {
        let r = client.get(master.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "GET {path} without a token");
    }
    for path in ["/healthz", "/readyz"] {
        let r = client.get(master.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "GET {path}");
    }
    let r = client
        .get(master.url("/api/data/series"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "reads with the read-only token");

    // Server files: outside the allowed directory, through a symlink, through `..`, and the
    // token file over gRPC with the read-only token.
    let link = imports.join("passwd.csv");
    std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
    let secret = imports.join("secret.csv");
    std::fs::write(
        &secret,
        "date,open,high,low,close,volume\n2024-01-02,SECRET-VALUE-1,2,0.5,1.5,100\nSECRET-LINE-2\n",
    )
    .unwrap();
    let dotdot = format!("{}/../../../../etc/passwd", imports.display());
    for path in [
        "/etc/passwd".to_owned(),
        link.display().to_string(),
        dotdot,
        dir.path().join("full.token").display().to_string(),
        format!("{}/missing.csv", imports.display()),
    ] {
        let r = client
            .post(master.url(&format!(
                "/api/data/import-file?path={path}&format=csv&dry_run=true&delimiter=:"
            )))
            .bearer_auth(FULL)
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        let text = r.text().await.unwrap();
        let message = refused(code, &text, &path);
        assert!(
            message.contains("not a readable file inside file_import.allowed_dirs"),
            "{path}: {message}"
        );
        assert!(!text.contains("root:") && !text.contains(FULL), "{text}");
    }
    // Allowed, but what it holds is never quoted.
    let r = client
        .post(master.url(&format!(
            "/api/data/import-file?path={}&dry_run=true&symbol=X&interval=1d",
            secret.display()
        )))
        .bearer_auth(FULL)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("SECRET-VALUE") && !text.contains("SECRET-LINE"),
        "a server file's content is not shown: {text}"
    );
    let r = client
        .post(master.url(&format!(
            "/api/data/import-file?path={}&dry_run=true&symbol=X&interval=1d",
            secret.display()
        )))
        .bearer_auth(READ)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        403,
        "a dry run of a server file is a write"
    );
    {
        use dms_common::pb::admin_client::AdminClient;
        let mut admin = AdminClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
        let mut req = tonic::Request::new(dms_common::pb::ImportFileRequest {
            path: dir.path().join("full.token").display().to_string(),
            format: "csv".into(),
            dry_run: true,
            ..Default::default()
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {READ}").parse().unwrap());
        let e = admin.import_file(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(!e.message().contains(FULL));
        let mut req = tonic::Request::new(dms_common::pb::ImportFileRequest {
            path: dir.path().join("full.token").display().to_string(),
            format: "csv".into(),
            dry_run: true,
            ..Default::default()
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {FULL}").parse().unwrap());
        let e = admin.import_file(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(!e.message().contains(FULL), "{e:?}");
    }

    // Hostile files: an xlsx whose shared strings declare 10^11 entries, zip bombs, and an
    // upload over the cap; each answered 400/413, the master alive, nothing left on disk.
    let uploads = dir.path().join("data/uploads");
    assert!(
        !uploads.join("20261207T000000-0-left.csv").exists(),
        "an upload no import reads is removed at start"
    );
    let upload = async |name: &str, bytes: Vec<u8>, ct: &str| {
        let r = client
            .post(master.url(&format!(
                "/api/data/import-file?filename={name}&dry_run=true&symbol=X&interval=1d"
            )))
            .bearer_auth(FULL)
            .header("content-type", ct)
            .body(bytes)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let bomb = files::xlsx_shared_strings_bomb();
    assert!(bomb.len() < 2048, "a small file: {} bytes", bomb.len());
    for (name, bytes) in [
        ("bomb.xlsx", bomb),
        ("declared.xlsx", files::xlsx_declaring_huge_entry()),
        ("zeros.xlsx", files::xlsx_zip_bomb()),
    ] {
        let (code, text) = upload(name, bytes, "application/octet-stream").await;
        assert_eq!(code, 400, "{name}: {text}");
        refused(code, &text, name);
        assert!(master.get("/healthz").await.is_ok(), "alive after {name}");
    }
    // Over the cap: announced (refused before the body is read) and streamed without a length.
    for ct in ["application/octet-stream", "application/grpc"] {
        let head = format!(
            "POST /api/data/import-file?filename=big.csv HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {FULL}\r\ncontent-type: {ct}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            5 << 20
        );
        let (code, body) = raw(port, head.as_bytes()).await;
        assert_eq!(code, 413, "{ct}, announced: {body}");
        let head = format!(
            "POST /api/data/import-file?filename=big.csv HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {FULL}\r\ncontent-type: {ct}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        let (code, body) = raw_streamed(port, head.as_bytes(), 6 << 20).await;
        assert_eq!(code, 413, "{ct}, streamed: {body}");
    }
    let left: Vec<_> = std::fs::read_dir(&uploads)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing left in uploads/: {left:?}");

    // Replication is closed to anyone without a token (only auth.token is configured).
    {
        use dms_common::pb::replication_client::ReplicationClient;
        let mut repl = ReplicationClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
        let key = dms_common::pb::SeriesKey {
            symbol: "BTC-USD".into(),
            interval: "1mo".into(),
        };
        let e = repl
            .list_series(dms_common::pb::ListSeriesRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "ListSeries: {e:?}");
        let e = repl
            .digests(dms_common::pb::DigestsRequest {
                series: vec![key.clone()],
                range: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "Digests: {e:?}");
        let e = repl
            .pull_range(dms_common::pb::PullRangeRequest {
                series: Some(key),
                range: Some(dms_common::pb::TimeRange {
                    start: 0,
                    end: i64::MAX,
                }),
                page_size: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "PullRange: {e:?}");
        let hello = dms_common::pb::ReplicaMessage {
            msg: Some(dms_common::pb::replica_message::Msg::Hello(
                dms_common::pb::Hello {
                    node_id: "anon-evil".into(),
                    ..Default::default()
                },
            )),
        };
        let e = repl
            .subscribe(tokio_stream::iter(vec![hello]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "Subscribe: {e:?}");
        // Nobody was registered: read from the state file, not the daemon's answer.
        let db = rusqlite::Connection::open_with_flags(
            dir.path().join("data/master-state.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let nodes: u64 = db
            .query_row("SELECT count(*) FROM replica_nodes", [], |r| r.get(0))
            .unwrap();
        assert_eq!(nodes, 0, "no replica node was registered");
    }

    // A migration target with a password in its URL: refused, never stored with a task.
    for body in [
        r#"{"target": {"type": "postgres", "url": "postgres://u:PASSW0RD-SECRET@127.0.0.1/x"}}"#,
        r#"{"target": {"type": "mysql", "url": "mysql://u@127.0.0.1/x?password=PASSW0RD-SECRET"}}"#,
        r#"{"target": {"type": "sqlite", "path": "/etc/PASSW0RD-SECRET"}}"#,
        r#"{"target": "postgres://u:PASSW0RD-SECRET@127.0.0.1/x"}"#,
        r#"{"replica": "http://u:PASSW0RD-SECRET@127.0.0.1:1"}"#,
    ] {
        let r = client
            .post(master.url("/api/data/migrate"))
            .bearer_auth(FULL)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        let text = r.text().await.unwrap();
        refused(code, &text, body);
        assert!(!text.contains("PASSW0RD-SECRET"), "{text}");
    }
    let r = client
        .get(master.url("/api/data/tasks?limit=1000"))
        .bearer_auth(FULL)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!r.contains("PASSW0RD-SECRET"), "{r}");
    let state = std::fs::read(dir.path().join("data/master-state.db")).unwrap();
    assert!(
        !String::from_utf8_lossy(&state).contains("PASSW0RD-SECRET"),
        "no secret in the state file"
    );

    // Hostile input: hundreds of malformed requests over REST and gRPC, only 4xx answers.
    let stats = corpus::run(&master, port, FULL, &imports).await;
    eprintln!(
        "hostile corpus: {} requests, {} refused, {} answered (reads, dry runs), {} bad",
        stats.total, stats.refused, stats.answered, stats.server_errors
    );
    assert!(stats.total >= 300, "{stats:?}");
    assert_eq!(stats.server_errors, 0, "{stats:?}");

    assert!(master.get("/healthz").await.is_ok(), "alive");
    assert_eq!(
        store_fingerprint(dir.path()),
        before,
        "the store is unchanged"
    );
}

/// Start-ups that would expose the master are refused with exit 2 and a message naming the
/// fix; secrets in URLs never reach `check-config`'s output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposed_listeners_need_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let write = |config: &str| std::fs::write(dir.path().join("c.yaml"), config).unwrap();
    let check = |args: &[&str]| run_master_command(dir.path(), args, &[]).unwrap();

    write("http:\n  listen: 0.0.0.0:0\n");
    for command in ["check-config", "run"] {
        let (code, _, stderr) = check(&["--config", "c.yaml", command]);
        assert_eq!(code, 2, "{command}: {stderr}");
        assert!(stderr.contains("auth.token_file"), "{stderr}");
        assert!(stderr.contains("http.allow_unauthenticated"), "{stderr}");
    }
    write("http:\n  listen: 0.0.0.0:0\nauth:\n  token: too-short-a-token\n");
    let (code, _, stderr) = check(&["--config", "c.yaml", "check-config"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("at least 32"), "{stderr}");
    assert!(!stderr.contains("too-short-a-token"), "{stderr}");
    write("http:\n  listen: 0.0.0.0:0\n  allow_unauthenticated: true\n");
    let (code, _, stderr) = check(&["--config", "c.yaml", "check-config"]);
    assert_eq!(code, 0, "the explicit opt-out: {stderr}");

    write(&format!(
        "http:\n  listen: 127.0.0.1:0\nauth:\n  token: {FULL}\ntargets:\n  pg:\n    type: postgres\n    url: postgres://u:URL-SECRET-1@127.0.0.1/x?password=URL-SECRET-2\n  rep:\n    type: replica\n    url: http://u:URL-SECRET-3@127.0.0.1:1\nstore:\n  type: influxdb\n  url: http://u:URL-SECRET-4@127.0.0.1:8086\n"
    ));
    let (code, stdout, stderr) = check(&["--config", "c.yaml", "check-config"]);
    assert_eq!(code, 0, "{stderr}");
    for n in 1..=4 {
        assert!(!stdout.contains(&format!("URL-SECRET-{n}")), "{stdout}");
    }
    assert!(!stdout.contains(FULL), "{stdout}");
}
