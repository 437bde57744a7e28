//! `certvault-central push`, the binary, against a running OPC UA server (ours, in this process, its key in a real
//! vaultd; the central's CA and client key in another): renewal with the key made by the server plus the CA and
//! CRL into the trust list, the certificate listed by `cert list`; then revocation pushed with
//! `--trust-list-only`; and clear refusals (wrong administrator password, unentitled device).

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use certvault::KeyStore;
use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::client::{ClientOptions, Session, SessionOptions, UserIdentity};
use certvault_opcua::pki::{Cert, PkiStore};
use certvault_opcua::server::access::UserRole;
use certvault_opcua::server::push::PushConfig;
use certvault_opcua::server::UserDatabase;
use certvault_tests::machine::{cheap_hash, MachineServer};
use certvault_tests::{identity, Vaultd};
use serde_json::Value;

const VAULTD: &str = env!("CARGO_BIN_EXE_central-test-vaultd");

async fn central(db: &Path, args: Vec<String>) -> Output {
    let db = db.to_path_buf();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_certvault-central"))
            .arg("--database")
            .arg(&db)
            .args(&args)
            .env("CERTVAULT_LOG", "warn")
            .output()
            .expect("run certvault-central")
    })
    .await
    .expect("join")
}

async fn ok_json(db: &Path, args: &[&str]) -> Value {
    let out = central(db, args.iter().map(|s| s.to_string()).collect()).await;
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

async fn fails(db: &Path, args: &[String], message: &str) {
    let out = central(db, args.to_vec()).await;
    assert!(!out.status.success(), "{args:?} should fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(message), "expected {message:?} in {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_command_renews_a_running_server_and_pushes_revocations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("central.db");
    let server_vault = Vaultd::start(VAULTD);
    let central_vault = Vaultd::start(VAULTD);
    let store: Arc<dyn KeyStore> = Arc::new(server_vault.client());
    let server = MachineServer::start(&server_vault, 16, |builder| {
        let mut users = UserDatabase::empty();
        users.add_hashed("gds-admin".into(), cheap_hash("s3cret-admin"), UserRole::Administrator).expect("admin");
        users.add_hashed("operator".into(), cheap_hash("s3cret-operator"), UserRole::Operator).expect("operator");
        builder.users(users).push(PushConfig::new(store))
    })
    .await;

    // The central: its CA and its OPC UA client key in its vault; the server trusts the client; the central's trust
    // store trusts the server's current certificate.
    central_vault.generate_rsa("plant-ca", 2048);
    let client = identity(central_vault.generate_rsa("central-client", 2048), "central", "urn:certvault:test:central");
    server.pki.trust(client.certificate()).expect("the server trusts the central");
    let pki = PkiStore::create_or_open(dir.path().join("pki")).expect("pki");
    pki.trust(&server.certificate).expect("trust the server");
    let client_cert = dir.path().join("central-client.der");
    std::fs::write(&client_cert, client.certificate()).expect("client cert");
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret-admin\n").expect("password file");
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password\n").expect("password file");

    ok_json(&db, &["device-type", "add", "opcua-server"]).await;
    ok_json(&db, &["device", "entitle", "CV-MACHINE-A", "--type", "opcua-server"]).await;
    let ca = ok_json(
        &db,
        &["ca", "create", "plant", "--key", &central_vault.key_uri("plant-ca"), "--common-name", "certvault plant CA"],
    )
    .await;
    let ca_cert = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(ca["certificate"].as_str().expect("cert")).expect("b64")
    };
    pki.trust(&ca_cert).expect("trust the central's CA");

    let push_args = |device: &str, password: &Path, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "push",
            "--url",
            server.endpoint_url(),
            "--device",
            device,
            "--ca",
            "plant",
            "--client-key",
            &central_vault.key_uri("central-client"),
            "--client-cert",
            &client_cert.display().to_string(),
            "--pki",
            &dir.path().join("pki").display().to_string(),
            "--user",
            "gds-admin",
            "--password-file",
            &password.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    // Refusals first: nothing may change on the server.
    fails(&db, &push_args("CV-UNKNOWN", &password, &[]), "not registered").await;
    fails(&db, &push_args("CV-MACHINE-A", &wrong, &[]), "connecting to").await;
    assert_eq!(server.current_certificate(), Some(server.certificate.clone()), "nothing changed");

    let report = ok_json(
        &db,
        &push_args("CV-MACHINE-A", &password, &["--trust-list"]).iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(report["key_made_by"], "server");
    assert_eq!(report["trust_list"], true);
    let serial = report["serial_number"].as_str().expect("serial").to_owned();
    let served = server.current_certificate().expect("current");
    assert_eq!(certvault::provision::thumbprint(&served), report["sha256"].as_str().expect("sha256"));
    let listed = ok_json(&db, &["cert", "list", "--device", "CV-MACHINE-A"]).await;
    assert!(
        listed.as_array().expect("list").iter().any(|c| c["serial_number"] == serial.as_str()),
        "the pushed certificate is listed: {listed}"
    );
    let leaf = Cert::from_der(&served).expect("served");
    assert!(
        certvault_opcua::pki::check_chain_signatures(&[leaf, Cert::from_der(&ca_cert).expect("ca")]).is_ok(),
        "issued by the central's CA"
    );

    // A client certificate from the central (issued through the library on the same database), revoked with the
    // CLI, its CRL pushed with --trust-list-only: the client is refused.
    let client_key = central_vault.generate_rsa("line-client", 2048);
    ok_json(&db, &["device-type", "add", "opcua-client"]).await;
    ok_json(&db, &["device", "entitle", "CV-LINE-CLIENT", "--type", "opcua-client"]).await;
    let line_cert = {
        let db = certvault_central::Db::open(db.to_str().expect("utf-8")).await.expect("db");
        let central = certvault_central::Central::new(db);
        let hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let recorded = certvault_central::push::issue_recorded(
            &central,
            &certvault_central::push::Issuance {
                device: "CV-LINE-CLIENT",
                ca: "plant",
                subject: certvault_central::issuer::Subject::PublicKey(&client_key.info().spki_der),
                common_name: "line client",
                application_uri: "urn:certvault:test:line-client",
                host_names: &hosts,
                validity_days: 30,
            },
            None,
        )
        .await
        .expect("issue");
        central.db().close().await;
        recorded
    };
    let connect = || {
        let mut channel = ClientOptions::new(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt);
        channel.timeout = Duration::from_secs(20);
        channel.identity = Some(
            certvault_opcua::channel::asymmetric::LocalIdentity::new(client_key.clone(), line_cert.chain[0].clone())
                .expect("identity"),
        );
        channel.server_certificate = Some(served.clone());
        let mut options = SessionOptions::new(channel);
        options.identity = UserIdentity::user_name("operator", "s3cret-operator");
        options.application_uri = Some("urn:certvault:test:line-client".into());
        Session::connect(server.endpoint_url(), options)
    };
    let session = connect().await.expect("the client connects before the revocation");
    let _ = session.close().await;
    ok_json(&db, &["cert", "revoke", &line_cert.serial_number, "--reason", "key-compromise"]).await;
    let out = ok_json(
        &db,
        &push_args("CV-MACHINE-A", &password, &["--trust-list-only"]).iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(out["trust_list"], true);
    match connect().await {
        Ok(_) => panic!("a revoked client certificate was accepted"),
        Err(e) => assert_eq!(e.status_code(), opcua_types::StatusCode::BadCertificateRevoked, "{e}"),
    }
}
