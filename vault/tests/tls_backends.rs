//! Mutual TLS where neither private key is in the test process: the server's key is in vaultd (another process),
//! the client's on a SoftHSM2 token. Resumption is off, so every handshake signs on both sides, and vaultd's audit
//! log must have counted each server signature.

mod common;

use certvault::{DaemonClient, KeyAlgorithm, KeyPolicy, KeySelector, KeyStore, SharedKey, SignAlg};
use common::vaultd::Vaultd;
use common::{run_mtls, MtlsCase, TestPki, RSA2048};
use rustls::SupportedProtocolVersion;

const TOKENS: &[&str] = &["mtls"];
const HANDSHAKES: usize = 4;

fn audited_signs(client: &DaemonClient, label: &str) -> usize {
    client
        .audit(1, 100_000)
        .unwrap()
        .iter()
        .filter(|r| r.op == "sign" && r.ok && r.key.as_deref() == Some(label))
        .count()
}

async fn case(
    v: &Vaultd,
    daemon: &DaemonClient,
    token: &certvault::pkcs11::Pkcs11Token,
    name: &str,
    version: &'static SupportedProtocolVersion,
    server_alg: KeyAlgorithm,
    client_alg: KeyAlgorithm,
) -> common::MtlsReport {
    let server_label = format!("{name}-server");
    let client_label = format!("{name}-client");
    daemon.generate(&server_label, server_alg, KeyPolicy::default()).unwrap();
    token.generate(&client_label, client_alg, KeyPolicy::default()).unwrap();
    let server_key: SharedKey = daemon.key(&KeySelector::Label(server_label.clone())).unwrap();
    let client_key: SharedKey = token.key(&KeySelector::Label(client_label)).unwrap();
    let before = audited_signs(daemon, &server_label);
    let pki = TestPki::new(KeyAlgorithm::EcP256);
    let report = run_mtls(&pki, MtlsCase { version, server_key, client_key, handshakes: HANDSHAKES }).await;
    assert_eq!(
        audited_signs(daemon, &server_label) - before,
        HANDSHAKES,
        "{name}: vaultd's audit log counts one signature per handshake (socket {})",
        v.socket.display()
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_the_server_key_in_vaultd_and_the_client_key_on_a_token() {
    let Some(token) = common::softhsm::token(TOKENS, "mtls") else { return };
    let v = Vaultd::start("CV-MTLS");
    let daemon = v.client();
    let tls13 = &rustls::version::TLS13;
    let tls12 = &rustls::version::TLS12;

    let r = case(&v, &daemon, &token, "t13-rsa", tls13, RSA2048, RSA2048).await;
    assert!(r.server_algs.iter().chain(&r.client_algs).all(|a| *a == SignAlg::RsaPssSha256), "{r:?}");

    let r = case(&v, &daemon, &token, "t13-ec", tls13, KeyAlgorithm::EcP256, RSA2048).await;
    assert!(r.server_algs.iter().all(|a| *a == SignAlg::EcdsaP256Sha256));
    assert!(r.client_algs.iter().all(|a| *a == SignAlg::RsaPssSha256));

    let r = case(&v, &daemon, &token, "t12-rsa", tls12, RSA2048, RSA2048).await;
    assert!(r.server_algs.iter().all(|a| a.is_pss()), "PSS is preferred under TLS 1.2 too: {r:?}");

    let r = case(&v, &daemon, &token, "t12-ec", tls12, KeyAlgorithm::EcP256, KeyAlgorithm::EcP256).await;
    assert!(r.server_algs.iter().chain(&r.client_algs).all(|a| *a == SignAlg::EcdsaP256Sha256));
}
