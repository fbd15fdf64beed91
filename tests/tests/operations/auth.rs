//! Bearer tokens on the daemons' REST APIs (writes need the full token, reads the read-only or
//! the full one, only the health probes are open), replication closed by the admin token, and
//! the size limits of REST bodies and gRPC messages. (A replica with a wrong replication token
//! is tested in tests/tests/replication.rs.)

use std::time::Duration;

use dms_e2e::{MasterProcess, free_port};

use crate::tls::master_config;

const SYNC: Duration = Duration::from_secs(60);

const FULL: &str = "full-token-for-tests-0123456789abcdef0123456789";
const READ_ONLY: &str = "read-only-token-for-tests-0123456789abcdef0123456789";
/// Long enough to be a token, and not one of the two.
const WRONG: &str = "not-the-token-0123456789abcdef0123456789";

/// A client that sends no token unless a request adds one (the daemons' own clients send the
/// read-only token).
fn anonymous() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `GET path` with `token` (none: without one); the status code.
async fn get_code(url: String, token: Option<&str>) -> u16 {
    let mut req = anonymous().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn post_update(master: &MasterProcess, token: Option<&str>, body: String) -> (u16, String) {
    let mut req = anonymous()
        .post(master.url("/api/data/update"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `POST /api/data/update` announcing a JSON body of `length` bytes, over a raw connection
/// that sends only the headers; returns the status code and the body of the answer.
async fn post_headers_only(port: u16, token: Option<&str>, length: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /api/data/update HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{auth}content-length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the answer's body is complete (the server may keep the connection open).
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if length.is_some_and(|n| body.len() >= n) {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s");
    dms_e2e::http_answer(&answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_writes_need_the_full_token_reads_a_token_and_big_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    dms_e2e::copy_sample_data(&dir.path().join("sample-data"));
    std::fs::write(dir.path().join("token"), format!("{FULL}\n")).unwrap();
    let config = master_config(&format!(
        "auth:\n  token_file: ./token\n  read_only:\n    token: {READ_ONLY}\n"
    ));
    // The helpers read with the read-only token; the requests below set their own.
    let master =
        MasterProcess::start_with(dir.path(), &config, free_port(), |c| c.token(READ_ONLY))
            .await
            .unwrap();
    master.wait_imported(Duration::from_secs(60)).await.unwrap();
    let body = || r#"{"symbols": ["BTC-USD"]}"#.to_owned();

    let (code, answer) = post_update(&master, None, body()).await;
    assert_eq!(code, 401, "{answer}");
    assert!(answer.contains("bearer token is required"), "{answer}");
    let (code, answer) = post_update(&master, Some(WRONG), body()).await;
    assert_eq!(code, 401, "{answer}");
    assert!(answer.contains("not valid"), "{answer}");
    let (code, answer) = post_update(&master, Some(READ_ONLY), body()).await;
    assert_eq!(code, 403, "{answer}");
    assert!(answer.contains("read-only"), "{answer}");
    let (code, answer) = post_update(&master, Some(FULL), body()).await;
    assert_eq!(code, 202, "{answer}");

    // A REST write that claims to be gRPC is still a REST write: refused without the token,
    // on every kind of mutating endpoint, and nothing is paused or started.
    for (method, path) in [
        (reqwest::Method::POST, "/api/data/update"),
        (reqwest::Method::POST, "/api/schedules/any/pause"),
        (reqwest::Method::DELETE, "/api/nodes/replica-1"),
    ] {
        let r = anonymous()
            .request(method.clone(), master.url(path))
            .header("content-type", "application/grpc")
            .body(body())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{method} {path}");
    }
    // A gRPC method's path answers only HTTP/2: the same call over HTTP/1.1 (what a web page
    // can send) reaches no service.
    let r = anonymous()
        .post(master.url("/dms.v1.Admin/StartTask"))
        .header("content-type", "application/grpc")
        .bearer_auth(FULL)
        .body(body())
        .send()
        .await
        .unwrap();
    let (code, answer) = (r.status().as_u16(), r.text().await.unwrap());
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("HTTP/2"), "{answer}");
    let (_, tasks) = master.get("/api/data/tasks").await.unwrap();
    let started = tasks["data"]
        .as_array()
        .map(|all| all.iter().filter(|t| t["kind"] != "source_import").count());
    assert_eq!(
        started,
        Some(1),
        "only the task started with the full token: {tasks}"
    );

    // Reads need the read-only or the full token; only the health probes are open.
    let (code, status) = master.get("/api/data/status").await.unwrap();
    assert_eq!(code, 200, "{status}");
    let (code, tasks) = master.get("/api/data/tasks").await.unwrap();
    assert_eq!(code, 200, "{tasks}");
    for path in [
        "/api/data/status",
        "/api/data/tasks",
        "/api/data/series",
        "/api/data/bars?symbol=GOOG&limit=1",
        "/api/data/export?format=csv&symbols=GOOG",
        "/api/nodes",
        "/metrics",
    ] {
        let url = || master.url(path);
        assert_eq!(
            get_code(url(), None).await,
            401,
            "GET {path} without a token"
        );
        assert_eq!(get_code(url(), Some(WRONG)).await, 401, "GET {path}");
        assert_eq!(get_code(url(), Some(READ_ONLY)).await, 200, "GET {path}");
        assert_eq!(get_code(url(), Some(FULL)).await, 200, "GET {path}");
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(get_code(master.url(path), None).await, 200, "GET {path}");
    }

    // A body over the REST limit (2 MiB) is refused from its Content-Length, before it is
    // read (sent as headers only: a client still writing would see the connection close).
    let big = 3 << 20;
    let (code, answer) = post_headers_only(master.port, Some(FULL), big).await;
    assert_eq!(code, 413, "{answer}");
    assert!(
        answer.contains("larger than this endpoint takes"),
        "{answer}"
    );
    // Without the token, the same request is refused for the token first.
    let (code, answer) = post_headers_only(master.port, None, big).await;
    assert_eq!(code, 401, "{answer}");
    assert!(!master.log_text().contains(FULL), "a token was logged");
    assert!(!master.log_text().contains(READ_ONLY), "a token was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_grpc_message_is_refused_with_a_clear_status() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let dir = tempfile::tempdir().unwrap();
    dms_e2e::copy_sample_data(&dir.path().join("sample-data"));
    let master = MasterProcess::start(dir.path(), &master_config(""))
        .await
        .unwrap();
    let channel = tonic::transport::Channel::from_shared(master.url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let small = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(small.into_inner().status, 1, "SERVING");
    let status = health
        .check(HealthCheckRequest {
            service: "x".repeat(5 << 20),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    // The master still serves.
    let (code, _) = master.get("/healthz").await.unwrap();
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicas_mutating_endpoints_need_its_full_token_and_its_reads_a_token() {
    let dir = tempfile::tempdir().unwrap();
    dms_e2e::copy_sample_data(&dir.path().join("sample-data"));
    let master = MasterProcess::start(dir.path(), &master_config(""))
        .await
        .unwrap();
    master.wait_imported(Duration::from_secs(60)).await.unwrap();
    let rdir = dir.path().join("replica");
    std::fs::create_dir_all(&rdir).unwrap();
    std::fs::write(rdir.join("token"), format!("{FULL}\n")).unwrap();
    let config = dms_e2e::replica_config(
        "guarded",
        master.port,
        &format!("auth:\n  token_file: ./token\n  read_only:\n    token: {READ_ONLY}\n"),
    );
    // The helpers read with the read-only token; the requests below set their own.
    let replica =
        dms_e2e::ReplicaProcess::start_with(&rdir, "guarded", &config, free_port(), |c| {
            c.token(READ_ONLY)
        })
        .await
        .unwrap();
    replica
        .wait_in_sync(&master, Duration::from_secs(60))
        .await
        .unwrap();

    let post = async |token: Option<&str>, claims_grpc: bool| {
        let mut req = anonymous()
            .post(replica.url("/api/replica/anti-entropy"))
            .header(
                "content-type",
                if claims_grpc {
                    "application/grpc"
                } else {
                    "application/json"
                },
            )
            .body("{}");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let (code, answer) = post(None, false).await;
    assert_eq!(code, 401, "{answer}");
    assert!(answer.contains("bearer token is required"), "{answer}");
    assert_eq!(post(None, true).await.0, 401, "claiming gRPC skips nothing");
    assert_eq!(post(Some(WRONG), false).await.0, 401);
    let (code, answer) = post(Some(READ_ONLY), false).await;
    assert_eq!(code, 403, "{answer}");
    let (code, answer) = post(Some(FULL), false).await;
    assert!((200..300).contains(&code), "{code}: {answer}");

    // Reads need the read-only or the full token (the anti-entropy just started may be
    // running: any state); only the health probes are open.
    let status = replica.status().await.unwrap();
    assert_eq!(status["node_id"], "guarded", "{status}");
    let (code, _) = replica.get("/api/data/status").await.unwrap();
    assert_eq!(code, 200);
    for path in ["/api/replica/status", "/api/data/status", "/metrics"] {
        let url = || replica.url(path);
        assert_eq!(
            get_code(url(), None).await,
            401,
            "GET {path} without a token"
        );
        assert_eq!(get_code(url(), Some(READ_ONLY)).await, 200, "GET {path}");
        assert_eq!(get_code(url(), Some(FULL)).await, 200, "GET {path}");
    }
    assert_eq!(get_code(replica.url("/healthz"), None).await, 200);
    assert!(!replica.log_text().contains(FULL), "a token was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_with_auth_takes_only_replicas_presenting_a_token_and_the_full_one_will_do() {
    let dir = tempfile::tempdir().unwrap();
    dms_e2e::copy_sample_data(&dir.path().join("sample-data"));
    std::fs::write(dir.path().join("token"), format!("{FULL}\n")).unwrap();
    // No replication token of its own: the admin token is enough to close replication.
    let config = master_config(&format!(
        "auth:\n  token_file: ./token\n  read_only:\n    token: {READ_ONLY}\n"
    ));
    let master =
        MasterProcess::start_with(dir.path(), &config, free_port(), |c| c.token(READ_ONLY))
            .await
            .unwrap();
    master.wait_imported(Duration::from_secs(60)).await.unwrap();
    let with_token = |name: &str, token: Option<&str>| {
        let config = dms_e2e::replica_config(name, master.port, "");
        match token {
            Some(t) => config.replace(
                "  idle_timeout: 3s",
                &format!("  token: {t}\n  idle_timeout: 3s"),
            ),
            None => config,
        }
    };
    // Without a token, and with the read-only one (which is not for replication): refused,
    // nothing received.
    for (name, token) in [("anonymous", None), ("reader", Some(READ_ONLY))] {
        let replica =
            dms_e2e::ReplicaProcess::start(&dir.path().join(name), name, &with_token(name, token))
                .await
                .unwrap();
        let status = replica
            .wait_until("the refusal to show in the status", SYNC, async || {
                let s = replica.status().await?;
                Ok(
                    if s["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("token"))
                    {
                        dms_e2e::Check::Ready(s)
                    } else {
                        dms_e2e::Check::Waiting(s.to_string())
                    },
                )
            })
            .await
            .unwrap();
        assert_eq!(status["cursor"], 0, "{name}: {status}");
        assert_eq!(replica.data_status().await.unwrap()["total_records"], 0);
    }
    // The full admin token replicates.
    let replica = dms_e2e::ReplicaProcess::start(
        &dir.path().join("admin"),
        "admin",
        &with_token("admin", Some(FULL)),
    )
    .await
    .unwrap();
    replica.wait_in_sync(&master, SYNC).await.unwrap();
    assert!(!master.log_text().contains(FULL), "a token was logged");
    assert!(!replica.log_text().contains(FULL), "a token was logged");
}
