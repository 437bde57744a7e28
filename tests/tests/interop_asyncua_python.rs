//! Interop with Python asyncua (opcua-asyncio) as the peer: its client opens secure channels to our server, whose
//! key is in a real vaultd, and calls GetEndpoints over None and every policy x {Sign, SignAndEncrypt}.
//!
//! The peer is `tests/python/ua_peer.py` in the venv `scripts/test` makes (`$CERTVAULT_PYTHON`). Without that
//! variable the test skips with a message, except under CI (`CI` set), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::pki::PkiStore;
use certvault_opcua::server::ServerBuilder;
use certvault_tests::{init_tracing, matrix_cases, Matrix, Vaultd};

const OUR_SERVER_URI: &str = "urn:certvault:test:server";
const PEER_CLIENT_URI: &str = "urn:asyncua:interop:client";

fn python() -> Option<PathBuf> {
    match std::env::var_os("CERTVAULT_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("CI").is_some() => panic!("CI is set but CERTVAULT_PYTHON is not: run scripts/test"),
        None => {
            eprintln!("SKIPPED: CERTVAULT_PYTHON is not set; scripts/test sets up the asyncua venv");
            None
        }
    }
}

fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/ua_peer.py")
}

/// Runs the peer tool and returns its one JSON line.
fn run_peer(python: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(python).arg(peer_script()).args(args).output().expect("run ua_peer.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("ua_peer.py printed no JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    })
}

fn wire_mode(mode: SecurityMode) -> &'static str {
    match mode {
        SecurityMode::None => "None",
        SecurityMode::Sign => "Sign",
        SecurityMode::SignAndEncrypt => "SignAndEncrypt",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_asyncua_client_against_our_server_interop() {
    init_tracing();
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap().to_string();
    let generated = tokio::task::spawn_blocking({
        let python = python.clone();
        move || run_peer(&python, &["gen-cert", "--out", &out, "--app-uri", PEER_CLIENT_URI, "--name", "client"])
    })
    .await
    .unwrap();
    assert_eq!(generated["ok"], true, "{generated}");
    let client_cert = generated["cert"].as_str().unwrap().to_string();
    let client_key = generated["key"].as_str().unwrap().to_string();

    // Our server trusts exactly this peer, through its PKI store.
    let store_dir = tempfile::tempdir().unwrap();
    let store = Arc::new(PkiStore::create_or_open(store_dir.path()).expect("pki store"));
    let peer_der = std::fs::read(&client_cert).expect("peer certificate");
    store.trust(&peer_der).expect("trust the peer");

    let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let key = vaultd.generate_rsa("opcua-server", 2048);
    let cert = certvault_tests::self_signed(&key, "server", OUR_SERVER_URI);
    let server = ServerBuilder::new("opc.tcp://127.0.0.1:0/")
        .application_uri(OUR_SERVER_URI)
        .identity(key, cert.clone())
        .expect("identity")
        .pki(store)
        .secure_endpoints()
        .allow_security_none()
        .start()
        .await
        .expect("server");
    let url = server.endpoint_url().to_string();

    let server_cert = dir.path().join("server.der");
    std::fs::write(&server_cert, &cert).unwrap();

    let mut matrix = Matrix::default();
    for (policy, mode) in matrix_cases() {
        let mut args = vec![
            "client-endpoints".to_string(),
            "--url".into(),
            url.clone(),
            "--policy".into(),
            policy.name().into(),
            "--mode".into(),
            wire_mode(mode).into(),
        ];
        if policy != SecurityPolicy::None {
            for (flag, value) in [
                ("--cert", client_cert.clone()),
                ("--key", client_key.clone()),
                ("--server-cert", server_cert.display().to_string()),
                ("--app-uri", PEER_CLIENT_URI.to_string()),
            ] {
                args.push(flag.into());
                args.push(value);
            }
        }
        let python = python.clone();
        let reply = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_peer(&python, &args)
        })
        .await
        .unwrap();
        let outcome = if reply["ok"] == true {
            let endpoints = reply["endpoints"].as_array().map_or(0, Vec::len);
            if endpoints == server.endpoints().len() {
                Ok(format!("{endpoints} endpoints"))
            } else {
                Err(format!("{endpoints} endpoints, expected {}", server.endpoints().len()))
            }
        } else {
            Err(format!("{} {}", reply["status"], reply["error"]))
        };
        matrix.record(policy, mode, "asyncua client -> our server", outcome);
    }
    matrix.print("Python asyncua 2.1.0 client against our server (server key in vaultd)");

    // A peer our server does not trust is refused at OpenSecureChannel, with the code that does not reveal the
    // trust list, and its certificate waits in rejected/certs for an operator.
    let stranger_dir = tempfile::tempdir().unwrap();
    let out = stranger_dir.path().to_str().unwrap().to_string();
    let url2 = url.clone();
    let server_cert2 = server_cert.display().to_string();
    let refused = tokio::task::spawn_blocking(move || {
        let g = run_peer(&python, &["gen-cert", "--out", &out, "--app-uri", PEER_CLIENT_URI, "--name", "stranger"]);
        let (cert, key) = (g["cert"].as_str().unwrap().to_string(), g["key"].as_str().unwrap().to_string());
        run_peer(
            &python,
            &[
                "client-endpoints",
                "--url",
                &url2,
                "--policy",
                "Basic256Sha256",
                "--mode",
                "SignAndEncrypt",
                "--cert",
                &cert,
                "--key",
                &key,
                "--server-cert",
                &server_cert2,
                "--app-uri",
                PEER_CLIENT_URI,
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["status"], "BadSecurityChecksFailed", "{refused}");
    let rejected = std::fs::read_dir(store_dir.path().join("rejected/certs")).unwrap().count();
    assert_eq!(rejected, 1, "the stranger's certificate is kept for the operator");
    server.shutdown().await;
    assert!(matrix.failures().is_empty(), "failed cases: {:?}", matrix.failures());
}
