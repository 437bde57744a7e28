//! The `certvault-central` binary: operator commands on a SQLite file, errors with a non-zero exit and a clear
//! message, a CA in a real vaultd and its CRL, and `serve` answering over real HTTP with what the CLI wrote.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use certvault::KeyAlgorithm;
use common::{http, http_auth, openssl, write_pem, TestVaultd};
use serde_json::Value;

fn central(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_certvault-central"))
        .arg("--database")
        .arg(db)
        .args(args)
        .env("CERTVAULT_LOG", "warn")
        .output()
        .expect("run certvault-central")
}

fn ok_json(db: &Path, args: &[&str]) -> Value {
    let out = central(db, args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn fails(db: &Path, args: &[&str], message: &str) {
    let out = central(db, args);
    assert!(!out.status.success(), "{args:?} should fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(message), "{args:?}: expected {message:?} in {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("central.db");
    let vault = TestVaultd::start("CV-CENTRAL");
    vault.generate("plant-ca", KeyAlgorithm::Rsa { bits: 2048 });
    let device_key = vault.generate("some-device-key", KeyAlgorithm::EcP256);
    write_pem(&dir.path().join("device.pem"), "PUBLIC KEY", &device_key.info().spki_der);

    ok_json(&db, &["device-type", "add", "filler", "--description", "bottle filling line"]);
    fails(&db, &["device-type", "add", "filler"], "exists");
    assert_eq!(ok_json(&db, &["device-type", "list"]).as_array().unwrap().len(), 1);
    let dev = ok_json(
        &db,
        &[
            "device",
            "entitle",
            "CV-1",
            "--type",
            "filler",
            "--device-key",
            &dir.path().join("device.pem").display().to_string(),
        ],
    );
    assert_eq!(dev["entitled"], true);
    assert!(dev["device_public_key"].as_str().is_some());
    std::fs::write(dir.path().join("garbage.pem"), "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
        .unwrap();
    fails(
        &db,
        &[
            "device",
            "entitle",
            "CV-2",
            "--type",
            "filler",
            "--device-key",
            &dir.path().join("garbage.pem").display().to_string(),
        ],
        "garbage.pem",
    );
    fails(&db, &["device", "entitle", "CV-2", "--type", "nope"], "device type \"nope\"");

    let ca = ok_json(&db, &["ca", "create", "plant", "--key", &vault.key_uri("plant-ca"), "--common-name", "Plant CA"]);
    assert_eq!(ca["name"], "plant");
    let order = ok_json(
        &db,
        &[
            "order",
            "create",
            "--device",
            "CV-1",
            "--label",
            "app",
            "--application-uri",
            "urn:certvault:test:app",
            "--host",
            "localhost",
            "--host",
            "127.0.0.1",
            "--days",
            "90",
            "--issuer",
            "ca:plant",
        ],
    );
    assert_eq!(order["items"][0]["host_names"], serde_json::json!(["localhost", "127.0.0.1"]));
    fails(
        &db,
        &[
            "order",
            "create",
            "--device",
            "CV-9",
            "--label",
            "x",
            "--application-uri",
            "urn:x",
            "--issuer",
            "self-signed",
        ],
        "device CV-9 is not registered",
    );
    fails(
        &db,
        &["order", "create", "--device", "CV-1", "--label", "y", "--application-uri", "urn:y", "--issuer", "bogus"],
        "issuer \"bogus\"",
    );
    std::fs::write(
        dir.path().join("items.json"),
        r#"[{"label": "user", "key_algorithm": "p256", "application_uri": "urn:certvault:test:user",
            "validity_days": 30, "issuer": "self-signed", "key_origin": "device"}]"#,
    )
    .unwrap();
    ok_json(
        &db,
        &["order", "create", "--device", "CV-1", "--items", &dir.path().join("items.json").display().to_string()],
    );
    assert_eq!(ok_json(&db, &["order", "list", "--device", "CV-1"]).as_array().unwrap().len(), 2);
    assert_eq!(ok_json(&db, &["device", "list"]).as_array().unwrap().len(), 1);
    assert!(ok_json(&db, &["device", "unconfirmed"]).as_array().unwrap().is_empty());
    assert!(ok_json(&db, &["expiring", "--days", "30"]).as_array().unwrap().is_empty());
    assert!(ok_json(&db, &["cert", "list"]).as_array().unwrap().is_empty());
    fails(&db, &["cert", "revoke", "abcd"], "not found");
    fails(&db, &["cert", "revoke", "abcd", "--reason", "bored"], "revocation reason");

    let crl = dir.path().join("plant.crl");
    ok_json(&db, &["ca", "crl", "plant", "--out", &crl.display().to_string(), "--new"]);
    let text = openssl(&["crl", "-inform", "DER", "-in", &crl.display().to_string(), "-noout", "-text"]);
    assert!(text.contains("No Revoked Certificates"), "{text}");
    fails(&db, &["ca", "crl", "nope", "--out", &crl.display().to_string()], "CA \"nope\"");

    std::fs::write(dir.path().join("request.bin"), b"a request").unwrap();
    fails(
        &db,
        &["process", &dir.path().join("request.bin").display().to_string(), "--out", "/dev/null"],
        "set [update_signer]",
    );

    // `serve` from a configuration file, on the same database, over real HTTP.
    let config = dir.path().join("central.toml");
    std::fs::write(
        &config,
        format!(
            "database = \"{}\"\nlisten = \"127.0.0.1:0\"\ncrl_dir = \"{}\"\noperator_token_file = \"{}\"\n\n\
             [external.openssl]\ncommand = [\"false\"]\n",
            db.display(),
            dir.path().join("crl").display(),
            dir.path().join("token").display()
        ),
    )
    .unwrap();
    let token = "operator-token-0123456789abcdef";
    std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_certvault-central"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("CERTVAULT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr = line.trim().strip_prefix("listening on http://").expect(&line).parse().unwrap();
    let (status, body) = http_auth(addr, "GET", "/api/devices", None, Some(token)).await;
    let devices: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (no_token, refusal) = http(addr, "GET", "/api/devices", None).await;
    let (wrong_token, _) = http_auth(addr, "GET", "/api/devices", None, Some("operator-token-0123456789abcdeX")).await;
    let (crl_status, _) = http(addr, "GET", "/api/cas/plant/crl", None).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200);
    assert_eq!(devices[0]["serial"], "CV-1");
    assert_eq!(no_token, 401);
    assert_eq!(serde_json::from_slice::<Value>(&refusal).unwrap()["kind"], "unauthorized");
    assert_eq!(wrong_token, 401);
    assert_eq!(crl_status, 200, "the CRL is public");

    std::fs::write(&config, "databse = 'typo'\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_certvault-central"))
        .arg("--config")
        .arg(&config)
        .args(["device", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"), "{}", String::from_utf8_lossy(&out.stderr));
}
