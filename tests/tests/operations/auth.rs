//! Bearer tokens on the master's REST API (writes need the full token, reads stay open) and
//! the size limits of REST bodies and gRPC messages. (A replica with a wrong replication token
//! is tested in tests/tests/replication.rs.)

use std::time::Duration;

use dms_e2e::MasterProcess;

use crate::tls::master_config;

const FULL: &str = "full-token-for-tests";
const READ_ONLY: &str = "read-only-token-for-tests";

async fn post_update(master: &MasterProcess, token: Option<&str>, body: String) -> (u16, String) {
    let mut req = master
        .client()
        .post(master.url("/api/data/update"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_writes_need_the_full_token_reads_stay_open_and_big_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    dms_e2e::copy_sample_data(&dir.path().join("sample-data"));
    std::fs::write(dir.path().join("token"), format!("{FULL}\n")).unwrap();
    let config = master_config(&format!(
        "auth:\n  token_file: ./token\n  read_only:\n    token: {READ_ONLY}\n"
    ));
    let master = MasterProcess::start(dir.path(), &config).await.unwrap();
    master.wait_imported(Duration::from_secs(60)).await.unwrap();
    let body = || r#"{"symbols": ["BTC-USD"]}"#.to_owned();

    let (code, answer) = post_update(&master, None, body()).await;
    assert_eq!(code, 401, "{answer}");
    assert!(answer.contains("bearer token is required"), "{answer}");
    let (code, answer) = post_update(&master, Some("not-the-token"), body()).await;
    assert_eq!(code, 401, "{answer}");
    assert!(answer.contains("not valid"), "{answer}");
    let (code, answer) = post_update(&master, Some(READ_ONLY), body()).await;
    assert_eq!(code, 403, "{answer}");
    assert!(answer.contains("read-only"), "{answer}");
    let (code, answer) = post_update(&master, Some(FULL), body()).await;
    assert_eq!(code, 202, "{answer}");

    // Reads need no token.
    let (code, status) = master.get("/api/data/status").await.unwrap();
    assert_eq!(code, 200, "{status}");
    let (code, tasks) = master.get("/api/data/tasks").await.unwrap();
    assert_eq!(code, 200, "{tasks}");

    // A body over the REST limit (2 MiB) is refused before it is parsed.
    let big = format!(
        r#"{{"symbols": ["BTC-USD"], "padding": "{}"}}"#,
        "x".repeat(3 << 20)
    );
    let (code, answer) = post_update(&master, Some(FULL), big).await;
    assert_eq!(code, 413, "{answer}");
    assert!(
        answer.contains("larger than this endpoint takes"),
        "{answer}"
    );
    // Without the token, the same body is refused for the token first.
    let (code, _) = post_update(&master, None, "x".repeat(3 << 20)).await;
    assert_eq!(code, 401);
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
