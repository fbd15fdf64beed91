//! TLS on the daemons' listener, with a test CA made here (rcgen): a replica replicating over
//! TLS, mutual TLS that admits only replicas with a client certificate, plaintext to a TLS port
//! failing with a message that says TLS, certificates swapped on SIGHUP, and config errors that
//! name the key and the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dms_e2e::{
    Check, DaemonCommand, Dmsctl, MasterProcess, ReplicaProcess, free_port, replica_config,
    run_master_command, wait_until,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

const SYNC: Duration = Duration::from_secs(60);

/// A certificate authority for one test.
pub(crate) struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub(crate) cert_pem: String,
}

/// A certificate and its key, as PEM files.
pub(crate) struct CertFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl TestCa {
    pub(crate) fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes the CA certificate to `dir/<file>`.
    pub(crate) fn write_ca(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, &self.cert_pem).unwrap();
        path
    }

    /// A certificate for `localhost` and `127.0.0.1` named `name`, good for a server and a
    /// client, written to `dir/<name>.pem` and `dir/<name>.key`.
    pub(crate) fn issue(&self, dir: &Path, name: &str) -> CertFiles {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = CertFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    /// An HTTPS client trusting only this CA, presenting `identity` if given.
    pub(crate) fn client(&self, identity: Option<&CertFiles>) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(5))
            .tls_certs_only([reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).unwrap()]);
        if let Some(id) = identity {
            let mut pem = std::fs::read(&id.cert).unwrap();
            pem.extend(std::fs::read(&id.key).unwrap());
            builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        builder.build().unwrap()
    }
}

/// A master over the sample data with `extra` appended.
pub(crate) fn master_config(extra: &str) -> String {
    dms_e2e::master_config(&format!("{}{extra}", dms_e2e::SAMPLE_SOURCE))
}

fn tls_section(server: &CertFiles, client_ca: Option<&Path>) -> String {
    let mut s = format!(
        "  tls:\n    cert: {}\n    key: {}\n",
        server.cert.display(),
        server.key.display()
    );
    if let Some(ca) = client_ca {
        s.push_str(&format!("    client_ca: {}\n", ca.display()));
    }
    s
}

/// Starts a TLS master over the sample data, driven through `client`; waits for its import.
async fn tls_master(dir: &Path, tls: &str, client: reqwest::Client) -> MasterProcess {
    dms_e2e::copy_sample_data(&dir.join("sample-data"));
    let config = master_config("").replace(
        "  listen: 127.0.0.1:{port}\n",
        &format!("  listen: 127.0.0.1:{{port}}\n{tls}"),
    );
    let master = MasterProcess::start_with(dir, &config, free_port(), |c: DaemonCommand| {
        c.https(client)
            .envs(&[("RUST_LOG", "info,dms_common::tls=debug")])
    })
    .await
    .unwrap();
    master.wait_imported(SYNC).await.unwrap();
    master
}

/// A replica of the master on `port` over `https://`, with `tls` as its `master.tls`.
async fn tls_replica(dir: &Path, name: &str, port: u16, tls: &str) -> ReplicaProcess {
    let config = replica_config(name, port, "").replace(
        &format!("  url: http://127.0.0.1:{port}\n"),
        &format!("  url: https://127.0.0.1:{port}\n  tls:\n{tls}"),
    );
    ReplicaProcess::start(&dir.join(name), name, &config)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_replicates_over_tls_and_plaintext_to_the_tls_port_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("dms test CA");
    let ca_file = ca.write_ca(dir.path(), "ca.pem");
    let server = ca.issue(dir.path(), "master");
    let master = tls_master(dir.path(), &tls_section(&server, None), ca.client(None)).await;
    let (code, status) = master.get("/api/data/status").await.unwrap();
    assert_eq!(code, 200, "{status}");
    let records = status["data"]["total_records"].as_u64().unwrap();
    assert!(records > 0, "{status}");

    let replica = tls_replica(
        dir.path(),
        "over-tls",
        master.port,
        &format!("    ca: {}\n", ca_file.display()),
    )
    .await;
    let synced = replica.wait_in_sync(&master, SYNC).await.unwrap();
    assert_eq!(synced["state"], "in_sync", "{synced}");
    assert_eq!(
        replica.data_status().await.unwrap()["total_records"],
        records
    );

    // dmsctl over TLS, trusting the test CA (given in the environment, as an operator would).
    let https = format!("https://localhost:{}", master.port);
    let ctl = Dmsctl::new(&https).env("DMS_CA", &ca_file.display().to_string());
    let out = ctl.run(&["status", "-o", "json"]).await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.json()["total_records"].as_u64(),
        Some(records),
        "{out:?}"
    );
    let nodes = ctl.run(&["nodes", "-o", "json"]).await.unwrap();
    assert_eq!(nodes.code, 0, "{nodes:?}");
    assert!(nodes.stdout.contains("over-tls"), "{nodes:?}");
    // Without the CA the server is not trusted; plaintext to the TLS port fails: one line each.
    let untrusted = Dmsctl::new(&https).run(&["status"]).await.unwrap();
    one_line_error(&untrusted);
    let plaintext = Dmsctl::new(&format!("http://127.0.0.1:{}", master.port))
        .run(&["status"])
        .await
        .unwrap();
    one_line_error(&plaintext);

    // Plain HTTP to the TLS port: a 400 that says to use TLS.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/healthz", master.port))
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    let body = plain.text().await.unwrap();
    assert!(body.contains("TLS") && body.contains("https://"), "{body}");
    // A replica configured with http:// says in its log that the port speaks TLS.
    let plain_replica = ReplicaProcess::start(
        &dir.path().join("plain"),
        "plain",
        &replica_config("plain", master.port, ""),
    )
    .await
    .unwrap();
    plain_replica
        .wait_until("the plaintext replica to log why", SYNC, async || {
            let log = plain_replica.log_text();
            Ok(
                if log.contains("the master's port speaks TLS: use an https://") {
                    Check::Ready(())
                } else {
                    Check::Waiting(log)
                },
            )
        })
        .await
        .unwrap();
    let status = plain_replica.status().await.unwrap();
    assert_ne!(status["state"], "in_sync", "{status}");
    // The master logs the refused connection at debug level.
    master
        .wait_until(
            "the master to log the plaintext attempt",
            SYNC,
            async || {
                let log = master.log_text();
                Ok(if log.contains("TLS handshake failed") {
                    Check::Ready(())
                } else {
                    Check::Waiting("no handshake failure logged".into())
                })
            },
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_replicas_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("dms test CA");
    let ca_file = ca.write_ca(dir.path(), "ca.pem");
    let server = ca.issue(dir.path(), "master");
    let operator = ca.issue(dir.path(), "operator");
    let replica_cert = ca.issue(dir.path(), "replica");
    let master = tls_master(
        dir.path(),
        &tls_section(&server, Some(&ca_file)),
        ca.client(Some(&operator)),
    )
    .await;

    // Without a client certificate, even HTTPS reads are refused.
    let anonymous = ca.client(None).get(master.url("/healthz")).send().await;
    assert!(anonymous.is_err(), "{anonymous:?}");

    let with_cert = tls_replica(
        dir.path(),
        "with-cert",
        master.port,
        &format!(
            "    ca: {}\n    cert: {}\n    key: {}\n",
            ca_file.display(),
            replica_cert.cert.display(),
            replica_cert.key.display()
        ),
    )
    .await;
    with_cert.wait_in_sync(&master, SYNC).await.unwrap();

    let without = tls_replica(
        dir.path(),
        "without-cert",
        master.port,
        &format!("    ca: {}\n", ca_file.display()),
    )
    .await;
    without
        .wait_until(
            "the replica without a certificate to fail",
            SYNC,
            async || {
                let s = without.status().await?;
                Ok(match s["last_error"].as_str() {
                    Some(e) => Check::Ready(e.to_owned()),
                    None => Check::Waiting(s.to_string()),
                })
            },
        )
        .await
        .unwrap();
    // What the replica sees depends on the TLS version (with TLS 1.3 the refusal comes after
    // its side of the handshake finished: "connection closed"); the master says why.
    master
        .wait_until(
            "the master to log the handshake without a certificate",
            SYNC,
            async || {
                let log = master.log_text();
                Ok(
                    match log
                        .lines()
                        .find(|l| l.contains("TLS handshake failed") && l.contains("certificate"))
                    {
                        Some(_) => Check::Ready(()),
                        None => Check::Waiting("no refused handshake logged".into()),
                    },
                )
            },
        )
        .await
        .unwrap();
    let status = without.status().await.unwrap();
    assert_ne!(status["state"], "in_sync", "{status}");
    assert_eq!(without.data_status().await.unwrap()["total_records"], 0);

    // dmsctl with a client certificate is admitted; without one it is refused in one line.
    let https = format!("https://localhost:{}", master.port);
    let ca_arg = ca_file.display().to_string();
    let (cert, key) = (
        operator.cert.display().to_string(),
        operator.key.display().to_string(),
    );
    let admitted = Dmsctl::new(&https)
        .run(&["--ca", &ca_arg, "--cert", &cert, "--key", &key, "nodes"])
        .await
        .unwrap();
    assert_eq!(admitted.code, 0, "{admitted:?}");
    assert!(admitted.stdout.contains("with-cert"), "{admitted:?}");
    let refused = Dmsctl::new(&https)
        .run(&["--ca", &ca_arg, "nodes"])
        .await
        .unwrap();
    one_line_error(&refused);
}

/// The run failed with one `error: …` line on stderr and nothing on stdout.
fn one_line_error(out: &dms_e2e::CtlOutput) {
    assert_ne!(out.code, 0, "{out:?}");
    let err = out.stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "one line expected: {out:?}");
    assert!(err.starts_with("error: "), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_for_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (TestCa::new("old CA"), TestCa::new("new CA"));
    let server = old_ca.issue(dir.path(), "master");
    let master = tls_master(dir.path(), &tls_section(&server, None), old_ca.client(None)).await;
    let trusts_new = || new_ca.client(None).get(master.url("/healthz")).send();
    assert!(trusts_new().await.is_err(), "the new CA signed nothing yet");

    // A broken key file: the reload is refused and the running certificate stays.
    std::fs::write(&server.key, "not a key").unwrap();
    master.reload().unwrap();
    master
        .wait_until("the refused reload to be logged", SYNC, async || {
            Ok(if master.log_text().contains("reload refused") {
                Check::Ready(())
            } else {
                Check::Waiting("no refusal logged".into())
            })
        })
        .await
        .unwrap();
    assert!(master.log_text().contains("http.tls.key"));
    let (code, _) = master.get("/healthz").await.unwrap();
    assert_eq!(code, 200);

    // Renewed files in place, then SIGHUP: new connections get the new certificate.
    let renewed = new_ca.issue(dir.path(), "renewed");
    std::fs::copy(&renewed.cert, &server.cert).unwrap();
    std::fs::copy(&renewed.key, &server.key).unwrap();
    master.reload().unwrap();
    wait_until(
        "new connections to get the new certificate",
        SYNC,
        async || {
            Ok(match trusts_new().await {
                Ok(r) if r.status().is_success() => Check::Ready(()),
                Ok(r) => Check::Waiting(format!("answered {}", r.status())),
                Err(e) => Check::Waiting(format!("{e:?}")),
            })
        },
    )
    .await
    .unwrap();
    let old = old_ca.client(None).get(master.url("/healthz")).send().await;
    assert!(
        old.is_err(),
        "a client of the old CA must not accept the new certificate"
    );
    assert!(master.log_text().contains("TLS certificate reloaded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_certificate_files_are_named_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("dms test CA");
    let server = ca.issue(dir.path(), "master");
    let other = ca.issue(dir.path(), "other");
    let check = |tls: &str| {
        let config = master_config("").replace("{port}", "0").replace(
            "  listen: 127.0.0.1:0\n",
            &format!("  listen: 127.0.0.1:0\n{tls}"),
        );
        std::fs::write(dir.path().join("m.yaml"), config).unwrap();
        dms_e2e::copy_sample_data(&dir.path().join("sample-data"));
        run_master_command(dir.path(), &["--config", "m.yaml", "check-config"], &[]).unwrap()
    };
    let missing = CertFiles {
        cert: dir.path().join("missing.pem"),
        key: server.key.clone(),
    };
    let (code, _, err) = check(&tls_section(&missing, None));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("http.tls.cert") && err.contains("missing.pem"),
        "{err}"
    );
    let mismatched = CertFiles {
        cert: server.cert.clone(),
        key: other.key,
    };
    let (code, _, err) = check(&tls_section(&mismatched, None));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("http.tls.key") && err.contains("other.key"),
        "{err}"
    );
    let (code, out, err) = check(&tls_section(&server, None));
    assert_eq!(code, 0, "{out}{err}");
}
