//! The `certvault` command line against a real vaultd and a real SoftHSM2 token, as an operator would use it:
//! every step through the binary, and the errors an operator meets must name the fix.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::vaultd::{spawn_with, Vaultd};

const TOKENS: &[&str] = &["cli", "front"];

fn certvault(socket: &Path, pin: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_certvault"))
        .args(args)
        .env("CERTVAULT_SOCKET", socket)
        .env("CERTVAULT_PIN", pin)
        .env_remove("CERTVAULT_PKCS11")
        .output()
        .expect("run certvault")
}

fn ok(out: Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "certvault failed: {}{text}", String::from_utf8_lossy(&out.stderr));
    text
}

fn fails(out: Output) -> String {
    assert!(!out.status.success(), "certvault should have failed: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn operator_flow_through_the_daemon() {
    let v = Vaultd::start("CV-CLI");
    let s = v.socket.as_path();
    let dir = v.dir.path();
    assert!(ok(certvault(s, "123456", &["status"])).contains("CV-CLI"));
    assert!(ok(certvault(s, "123456", &["keygen", "--label", "srv", "--alg", "rsa2048"])).contains("inside the vault"));
    ok(certvault(s, "123456", &["keygen", "--label", "ec", "--alg", "p256"]));
    let list = ok(certvault(s, "123456", &["list"]));
    assert!(list.contains("srv\trsa2048") && list.contains("ec\tp256"), "{list}");

    let msg = dir.join("msg");
    std::fs::write(&msg, b"hello").unwrap();
    let sig = dir.join("msg.sig");
    let (m, g) = (msg.to_str().unwrap(), sig.to_str().unwrap());
    ok(certvault(s, "123456", &["sign", "--label", "ec", "--alg", "ecdsa-p256-sha256", "--in", m, "--out", g]));
    assert!(ok(certvault(
        s,
        "123456",
        &["verify", "--label", "ec", "--alg", "ecdsa-p256-sha256", "--in", m, "--sig", g]
    ))
    .contains("signature OK"));
    std::fs::write(&msg, b"tampered").unwrap();
    fails(certvault(s, "123456", &["verify", "--label", "ec", "--alg", "ecdsa-p256-sha256", "--in", m, "--sig", g]));

    let cert = dir.join("srv.pem");
    ok(certvault(
        s,
        "123456",
        &[
            "self-sign",
            "--label",
            "srv",
            "--cn",
            "srv",
            "--uri",
            "urn:x:srv",
            "--dns",
            "localhost",
            "--out",
            cert.to_str().unwrap(),
        ],
    ));
    let exported = dir.join("chain.pem");
    ok(certvault(s, "123456", &["export-cert", "--label", "srv", "--out", exported.to_str().unwrap()]));
    assert_eq!(std::fs::read(&cert).unwrap(), std::fs::read(&exported).unwrap());
    let csr = dir.join("ec.csr");
    ok(certvault(s, "123456", &["csr", "--label", "ec", "--cn", "ec", "--out", csr.to_str().unwrap()]));
    assert!(std::fs::metadata(&csr).unwrap().len() > 100);
    assert!(fails(certvault(s, "123456", &["import-cert", "--label", "ec", cert.to_str().unwrap()]))
        .contains("does not carry the public key"));

    let audit = ok(certvault(s, "123456", &["audit", "show"]));
    assert!(audit.lines().any(|l| l.contains("\tsign\tec\t")), "{audit}");
    let container = v.container.to_str().unwrap();
    assert!(ok(certvault(s, "123456", &["audit", "verify", "--file", container])).contains("chain intact"));

    // Errors that name the fix.
    let e = fails(certvault(s, "0000", &["list"]));
    assert!(e.contains("wrong PIN") && e.contains("2 attempt(s) left"), "{e}");
    fails(certvault(s, "0001", &["list"]));
    fails(certvault(s, "0002", &["list"]));
    let e = fails(certvault(s, "123456", &["list"]));
    assert!(e.contains("locked") && e.contains("certvault unlock"), "{e}");
    let out = Command::new(env!("CARGO_BIN_EXE_certvault"))
        .args(["unlock"])
        .env("CERTVAULT_SOCKET", s)
        .env("CERTVAULT_ADMIN_PIN", "admin-pin-42")
        .env("CERTVAULT_NEW_PIN", "24680")
        .output()
        .unwrap();
    ok(out);
    ok(certvault(s, "24680", &["list"]));
    let nowhere = dir.join("nobody-listens.sock");
    let e = fails(certvault(&nowhere, "24680", &["list"]));
    assert!(e.contains("cannot reach vaultd") && e.contains("vaultd --container"), "{e}");
    assert!(
        fails(certvault(s, "24680", &["keygen", "--label", "x", "--alg", "rsa1024"])).contains("unknown key algorithm")
    );
}

#[test]
fn cli_on_a_token_and_vaultd_fronting_a_token() {
    let Some(_) = common::softhsm::setup(TOKENS) else { return };
    let module = common::softhsm::MODULE;
    let dir = tempfile::tempdir().unwrap();

    // The CLI straight on the token.
    let uri = format!("pkcs11:token=cli?module-path={module}");
    let out = Command::new(env!("CARGO_BIN_EXE_certvault"))
        .args(["--pkcs11", &uri, "keygen", "--label", "tok", "--alg", "p256"])
        .env("CERTVAULT_PIN", "123456")
        .output()
        .unwrap();
    ok(out);
    let out = Command::new(env!("CARGO_BIN_EXE_certvault"))
        .args(["--pkcs11", &uri, "list"])
        .env("CERTVAULT_PIN", "123456")
        .output()
        .unwrap();
    assert!(ok(out).contains("tok\tp256"));
    let out = Command::new(env!("CARGO_BIN_EXE_certvault"))
        .args(["--pkcs11", &uri, "status"])
        .env("CERTVAULT_PIN", "123456")
        .output()
        .unwrap();
    assert!(fails(out).contains("vaultd command"));

    // vaultd in front of another token: the application talks only to the daemon.
    let socket = dir.path().join("front.sock");
    let front = format!("pkcs11:token=front?module-path={module}");
    let mut child =
        spawn_with(&["--pkcs11".as_ref(), front.as_ref(), "--state-dir".as_ref(), dir.path().as_os_str()], &socket)
            .unwrap();
    let result = std::panic::catch_unwind(|| {
        use certvault::{DaemonClient, KeyAlgorithm, KeyPolicy, KeySelector, KeyStore, PublicKey, SignAlg};
        let c = DaemonClient::connect(&socket, None).unwrap();
        assert_eq!(c.hello().unwrap().1[0].backend, "pkcs11");
        assert!(c.list().is_err(), "no login yet");
        c.login(b"123456").unwrap();
        let info = c.generate("fronted", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default()).unwrap();
        let key = c.key(&KeySelector::Label("fronted".into())).unwrap();
        let sig = key.sign(SignAlg::RsaPssSha256, b"m").unwrap();
        PublicKey::from_spki(&info.spki_der).unwrap().verify(SignAlg::RsaPssSha256, b"m", &sig).unwrap();
        let other = DaemonClient::connect(&socket, None).unwrap();
        assert!(other.login(b"999999").is_err(), "a later login with another PIN is refused");
        let records = c.audit(1, 100).unwrap();
        assert!(records.iter().any(|r| r.op == "sign" && r.key.as_deref() == Some("fronted")));
        assert!(c.change_pin(b"123456", b"654321").is_err(), "token PINs are the token's business");
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
