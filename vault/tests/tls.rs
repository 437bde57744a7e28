//! Mutual TLS over vault keys on real loopback sockets: every handshake signature is made through `VaultKey`.

mod common;

use std::sync::Arc;

use certvault::tls::SwappableCertifiedKey;
use certvault::{KeyAlgorithm, SignAlg};
use common::{mtls_configs, ping, run_mtls, soft_key, CountingKey, MtlsCase, TestPki, TestServer, RSA2048};
use rustls::version::{TLS12, TLS13};
use rustls::ProtocolVersion;

const HANDSHAKES: usize = 3;

fn all(algs: &[SignAlg], alg: SignAlg) -> bool {
    !algs.is_empty() && algs.iter().all(|a| *a == alg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_tls13_rsa_server_rsa_client() {
    let pki = TestPki::new(KeyAlgorithm::EcP256);
    let report = run_mtls(
        &pki,
        MtlsCase {
            version: &TLS13,
            server_key: soft_key(RSA2048, "server-rsa"),
            client_key: soft_key(RSA2048, "client-rsa"),
            handshakes: HANDSHAKES,
        },
    )
    .await;
    // TLS 1.3 admits only PSS for RSA handshake signatures.
    assert!(all(&report.server_algs, SignAlg::RsaPssSha256), "{report:?}");
    assert!(all(&report.client_algs, SignAlg::RsaPssSha256), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_tls13_ecdsa_server_rsa_client() {
    let pki = TestPki::new(RSA2048);
    let report = run_mtls(
        &pki,
        MtlsCase {
            version: &TLS13,
            server_key: soft_key(KeyAlgorithm::EcP256, "server-p256"),
            client_key: soft_key(RSA2048, "client-rsa"),
            handshakes: HANDSHAKES,
        },
    )
    .await;
    assert!(all(&report.server_algs, SignAlg::EcdsaP256Sha256), "{report:?}");
    assert!(all(&report.client_algs, SignAlg::RsaPssSha256), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_tls13_p384_server_p256_client() {
    let pki = TestPki::new(KeyAlgorithm::EcP384);
    let report = run_mtls(
        &pki,
        MtlsCase {
            version: &TLS13,
            server_key: soft_key(KeyAlgorithm::EcP384, "server-p384"),
            client_key: soft_key(KeyAlgorithm::EcP256, "client-p256"),
            handshakes: 1,
        },
    )
    .await;
    assert!(all(&report.server_algs, SignAlg::EcdsaP384Sha384), "{report:?}");
    assert!(all(&report.client_algs, SignAlg::EcdsaP256Sha256), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_tls12_rsa_server_rsa_client() {
    let pki = TestPki::new(RSA2048);
    let report = run_mtls(
        &pki,
        MtlsCase {
            version: &TLS12,
            server_key: soft_key(RSA2048, "server-rsa"),
            client_key: soft_key(RSA2048, "client-rsa"),
            handshakes: HANDSHAKES,
        },
    )
    .await;
    // rustls offers PSS in TLS 1.2 too, and our preference picks it over PKCS#1 v1.5.
    assert!(report.server_algs.iter().all(SignAlg::is_pss), "{report:?}");
    assert!(report.client_algs.iter().all(SignAlg::is_pss), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_tls12_ecdsa_server_ecdsa_client() {
    let pki = TestPki::new(KeyAlgorithm::EcP256);
    let report = run_mtls(
        &pki,
        MtlsCase {
            version: &TLS12,
            server_key: soft_key(KeyAlgorithm::EcP256, "server-p256"),
            client_key: soft_key(KeyAlgorithm::EcP256, "client-p256"),
            handshakes: HANDSHAKES,
        },
    )
    .await;
    assert!(all(&report.server_algs, SignAlg::EcdsaP256Sha256), "{report:?}");
    assert!(all(&report.client_algs, SignAlg::EcdsaP256Sha256), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_server_certificate_is_served_on_the_next_handshake() {
    let pki = TestPki::new(KeyAlgorithm::EcP256);
    let old_key = soft_key(KeyAlgorithm::EcP256, "server-old");
    let old_chain = pki.issue(&old_key, "server-old");
    let server = Arc::new(SwappableCertifiedKey::new(old_chain.clone(), old_key.clone()).expect("pair"));
    let client_key = soft_key(KeyAlgorithm::EcP256, "client");
    let (scfg, ccfg) = mtls_configs(&pki, server.clone(), pki.resolver(&client_key, "client"), &TLS13);
    let mut listener = TestServer::start(scfg).await;

    let seen = ping(ccfg.clone(), listener.addr).await.expect("first handshake");
    listener.next_outcome().await.expect("served");
    assert_eq!(seen.peer_certs, old_chain);

    // Renewal with a new key, e.g. after a certificate update: no restart, no new ServerConfig.
    let new_key = CountingKey::new(soft_key(RSA2048, "server-new"));
    let new_chain = pki.issue(&new_key.shared(), "server-new");
    server.replace(new_chain.clone(), new_key.shared()).expect("matching pair accepted");

    let seen = ping(ccfg.clone(), listener.addr).await.expect("handshake after renewal");
    listener.next_outcome().await.expect("served");
    assert_eq!(seen.peer_certs, new_chain);
    assert_eq!(new_key.count(), 1);
    assert_eq!(new_key.algs(), vec![SignAlg::RsaPssSha256]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_replace_is_refused_and_old_certificate_kept() {
    let pki = TestPki::new(KeyAlgorithm::EcP256);
    let key = soft_key(KeyAlgorithm::EcP256, "server");
    let chain = pki.issue(&key, "server");
    let server = Arc::new(SwappableCertifiedKey::new(chain.clone(), key.clone()).expect("pair"));
    let client_key = soft_key(RSA2048, "client");
    let (scfg, ccfg) = mtls_configs(&pki, server.clone(), pki.resolver(&client_key, "client"), &TLS13);
    let mut listener = TestServer::start(scfg).await;

    // A certificate issued to another key, presented with ours: must not be installed.
    let other = soft_key(KeyAlgorithm::EcP256, "other");
    let other_chain = pki.issue(&other, "other");
    assert!(server.replace(other_chain.clone(), key.clone()).is_err());
    assert!(server.replace(chain.clone(), other.clone()).is_err());
    assert_eq!(server.current().cert, chain);

    for _ in 0..2 {
        let seen = ping(ccfg.clone(), listener.addr).await.expect("handshake with the old pair");
        listener.next_outcome().await.expect("served");
        assert_eq!(seen.peer_certs, chain);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_server_key_fails_the_handshake_and_the_server_keeps_accepting() {
    let pki = TestPki::new(KeyAlgorithm::EcP256);
    let server_key = CountingKey::new(soft_key(RSA2048, "server"));
    let client_key = soft_key(KeyAlgorithm::EcP256, "client");
    for version in [&TLS13, &TLS12] {
        let (scfg, ccfg) = mtls_configs(
            &pki,
            pki.resolver(&server_key.shared(), "server"),
            pki.resolver(&client_key, "client"),
            version,
        );
        let mut listener = TestServer::start(scfg).await;

        server_key.set_failing(true);
        let before = server_key.count();
        let err = ping(ccfg.clone(), listener.addr).await.expect_err("the handshake must fail");
        assert!(!err.contains("timed out"), "failed cleanly, not by hanging: {err}");
        let served = listener.next_outcome().await.expect_err("the server saw the failure");
        assert!(served.contains("could not sign"), "{served}");
        assert_eq!(server_key.count(), before + 1, "one attempt, no retry loop");

        // The vault recovers (dongle plugged back in): the same listener serves the next client.
        server_key.set_failing(false);
        let ok = ping(ccfg.clone(), listener.addr).await.expect("next client is served");
        assert_eq!(ok.version, version.version);
        listener.next_outcome().await.expect("served");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_client_key_fails_only_that_client() {
    let pki = TestPki::new(KeyAlgorithm::EcP256);
    let server_key = soft_key(KeyAlgorithm::EcP256, "server");
    let bad_key = CountingKey::new(soft_key(RSA2048, "bad-client"));
    bad_key.set_failing(true);
    let good_key = soft_key(RSA2048, "good-client");
    let server = pki.resolver(&server_key, "server");
    let (scfg, bad_cfg) = mtls_configs(&pki, server.clone(), pki.resolver(&bad_key.shared(), "bad"), &TLS13);
    let (_, good_cfg) = mtls_configs(&pki, server, pki.resolver(&good_key, "good"), &TLS13);
    let mut listener = TestServer::start(scfg).await;

    let err = ping(bad_cfg, listener.addr).await.expect_err("client cannot sign");
    assert!(err.contains("could not sign"), "{err}");
    assert!(listener.next_outcome().await.is_err());
    assert_eq!(bad_key.count(), 1);

    let ok = ping(good_cfg, listener.addr).await.expect("other client is served");
    assert_eq!(ok.version, ProtocolVersion::TLSv1_3);
    listener.next_outcome().await.expect("served");
}

/// A ring provider whose peer offers no RSA-PSS: what a TLS 1.2 peer limited to PKCS#1 v1.5 looks like.
fn provider_without_pss() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = (*certvault::tls::default_provider()).clone();
    let mapping: Vec<_> = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .filter(|(scheme, _)| {
            !matches!(
                scheme,
                rustls::SignatureScheme::RSA_PSS_SHA256
                    | rustls::SignatureScheme::RSA_PSS_SHA384
                    | rustls::SignatureScheme::RSA_PSS_SHA512
            )
        })
        .copied()
        .collect();
    provider.signature_verification_algorithms.mapping = Vec::leak(mapping);
    Arc::new(provider)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_falls_back_to_pkcs1_only_in_tls12_and_never_in_tls13() {
    let pki = TestPki::new(KeyAlgorithm::EcP256);
    let server_key = CountingKey::new(soft_key(RSA2048, "server-rsa"));
    let client_key = soft_key(KeyAlgorithm::EcP256, "client");
    for version in [&TLS12, &TLS13] {
        let server = pki.resolver(&server_key.shared(), "server");
        let client = pki.resolver(&client_key, "client");
        let (scfg, _) = mtls_configs(&pki, server, client.clone(), version);
        let mut ccfg = certvault::tls::client_config(provider_without_pss(), pki.roots(), client, &[version])
            .expect("client config");
        ccfg.resumption = rustls::client::Resumption::disabled();
        let mut listener = TestServer::start(scfg).await;
        let before = server_key.algs().len();
        let outcome = ping(Arc::new(ccfg), listener.addr).await;
        let served = listener.next_outcome().await;
        let new_algs = server_key.algs()[before..].to_vec();
        if version == &TLS12 {
            outcome.expect("TLS 1.2 handshake with PKCS#1 v1.5");
            served.expect("served");
            assert_eq!(new_algs, vec![SignAlg::RsaPkcs1Sha256]);
        } else {
            // TLS 1.3 has no PKCS#1 v1.5 handshake signatures: nothing is left to choose, and the vault is not asked.
            assert!(outcome.is_err());
            assert!(served.is_err());
            assert!(new_algs.is_empty(), "{new_algs:?}");
        }
    }
}
