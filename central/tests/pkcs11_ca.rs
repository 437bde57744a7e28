//! The central's CA with its key on a PKCS#11 token (SoftHSM2), through a `pkcs11:` URI: the CA certificate, an
//! issued certificate and a CRL listing its revocation are all signed on the token. Its own test binary, because
//! PKCS#11 initialisation and `SOFTHSM2_CONF` are per process. Skips without SoftHSM2 unless
//! `CERTVAULT_REQUIRE_SOFTHSM` is set.

mod common;

use std::path::Path;

use certvault::csr::CsrRequest;
use certvault::pkcs11::{softhsm, Pkcs11Token};
use certvault::{KeyAlgorithm, KeySelector, KeyStore};
use certvault_central::processing::{KeyOrigin, RequestItem, VerifiedRequest};
use certvault_central::registry::{self, Entitlement, KeyOriginKind, NewOrderItem, RevocationReason};
use certvault_central::Central;
use common::{openssl, write_pem, TestVaultd};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_key_on_a_pkcs11_token() {
    if !softhsm::available() {
        assert!(
            std::env::var_os("CERTVAULT_REQUIRE_SOFTHSM").is_none(),
            "CERTVAULT_REQUIRE_SOFTHSM is set but SoftHSM2 is missing"
        );
        eprintln!("SKIPPED: SoftHSM2 is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = softhsm::write_config(dir.path()).unwrap();
    // Before anything in this process initialises the module, which reads it.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    softhsm::init_token(&conf, "central-ca", "123456", "12345678").unwrap();
    let token = Pkcs11Token::open(Path::new(softhsm::MODULE), "central-ca", Some(b"123456")).unwrap();
    token.generate("plant-ca", KeyAlgorithm::Rsa { bits: 2048 }, Default::default()).unwrap();
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "123456").unwrap();
    let uri = format!(
        "pkcs11:token=central-ca;object=plant-ca?module-path={}&pin-source=file:{}",
        softhsm::MODULE,
        pin.display()
    );

    let central = Central::new(common::sqlite_db(dir.path()).await);
    let db = central.db().clone();
    let ca = central.create_ca("hsm", &uri, "HSM Plant CA", 365).await.unwrap();
    assert!(!ca.key_uri.contains("123456"));
    registry::add_device_type(&db, "filler", "").await.unwrap();
    let dongle = TestVaultd::start("CV-HSM-1");
    let device_key = dongle.generate("device-identity", KeyAlgorithm::EcP256);
    let transport = dongle.generate("transport", KeyAlgorithm::Rsa { bits: 2048 });
    dongle.generate("app", KeyAlgorithm::EcP256);
    registry::entitle(
        &db,
        &Entitlement { serial: "CV-HSM-1".into(), device_type: "filler".into(), ..Default::default() },
    )
    .await
    .unwrap();
    let order = NewOrderItem {
        label: "app".into(),
        key_algorithm: "p256".into(),
        application_uri: "urn:certvault:test:hsm".into(),
        host_names: vec!["localhost".into()],
        validity_days: 30,
        issuer: "ca:hsm".into(),
        key_origin: KeyOriginKind::Device,
    };
    registry::create_order(&db, "CV-HSM-1", &[order]).await.unwrap();
    let csr = dongle
        .client()
        .create_csr(&KeySelector::Label("app".into()), &CsrRequest { common_name: "app".into(), ..Default::default() })
        .unwrap();
    let issued = central
        .process(&VerifiedRequest {
            serial: "CV-HSM-1".into(),
            device_public_key: device_key.info().spki_der.clone(),
            transport_public_key: transport.info().spki_der.clone(),
            transport_oaep: Default::default(),
            nonce: [9; 32],
            counter: 0,
            items: vec![RequestItem {
                label: "app".into(),
                key_algorithm: KeyAlgorithm::EcP256,
                application_uri: String::new(),
                host_names: vec![],
                origin: KeyOrigin::Device { csr_der: csr },
            }],
        })
        .await
        .unwrap();
    let chain = &issued.items[0].chain;
    write_pem(&dir.path().join("ca.pem"), "CERTIFICATE", &chain[1]);
    write_pem(&dir.path().join("leaf.pem"), "CERTIFICATE", &chain[0]);
    let ca_pem = dir.path().join("ca.pem").display().to_string();
    let out = openssl(&["verify", "-CAfile", &ca_pem, &dir.path().join("leaf.pem").display().to_string()]);
    assert!(out.contains(": OK"), "{out}");
    let text = openssl(&["x509", "-in", &dir.path().join("leaf.pem").display().to_string(), "-noout", "-text"]);
    // An EC key: no encipherment usages.
    assert!(text.contains("Digital Signature, Non Repudiation\n"), "{text}");

    let serial = registry::certificates(&db, None).await.unwrap()[0].serial_number.clone();
    central.revoke(&serial, RevocationReason::CessationOfOperation).await.unwrap();
    let crl = dir.path().join("hsm.crl");
    std::fs::write(&crl, central.crl("hsm").await.unwrap()).unwrap();
    let crl = crl.display().to_string();
    let text = openssl(&["crl", "-inform", "DER", "-in", &crl, "-noout", "-text", "-CAfile", &ca_pem]);
    assert!(text.to_ascii_lowercase().contains(&serial), "{text}");
    assert!(text.contains("Cessation Of Operation"), "{text}");
    drop(token);
}
