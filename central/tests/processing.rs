//! Processing verified requests end to end on real parts: the central's CA and backup key in a vaultd, the device's
//! keys in its own vaultd (dongle), a real `openssl ca` as the external CA, SQLite and (when installed) PostgreSQL.
//! Every negative case must change nothing in the database.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use certvault::csr::CsrRequest;
use certvault::{KeyAlgorithm, KeySelector, KeyStore, SharedKey};
use certvault_central::processing::{KeyOrigin, ReceiptCertificate, RequestItem, VerifiedReceipt, VerifiedRequest};
use certvault_central::registry::{self, Entitlement, KeyOriginKind, NewOrderItem, RevocationReason};
use certvault_central::{Central, CentralError, Db};
use common::{openssl, snapshot, write_pem, OpensslCa, TestVaultd};

/// The device side, played by a real dongle (vaultd): identity key, transport key and application keys inside.
struct Dongle {
    vault: TestVaultd,
    device_key: SharedKey,
    transport_key: SharedKey,
}

impl Dongle {
    fn new(serial: &str) -> Dongle {
        let vault = TestVaultd::start(serial);
        let device_key = vault.generate("device-identity", KeyAlgorithm::EcP256);
        let transport_key = vault.generate("transport", KeyAlgorithm::Rsa { bits: 2048 });
        Dongle { vault, device_key, transport_key }
    }

    fn entitlement(&self, pin_keys: bool) -> Entitlement {
        Entitlement {
            serial: self.vault.serial.clone(),
            device_type: "filler".into(),
            device_public_key: pin_keys.then(|| B64.encode(&self.device_key.info().spki_der)),
            transport_public_key: None,
        }
    }

    fn csr(&self, label: &str, uri: &str) -> Vec<u8> {
        let c = self.vault.client();
        if c.key(&KeySelector::Label(label.into())).is_err() {
            c.generate(label, KeyAlgorithm::Rsa { bits: 2048 }, Default::default()).unwrap();
        }
        c.create_csr(&KeySelector::Label(label.into()), &csr_request(uri)).unwrap()
    }

    fn request(&self, counter: u64, items: Vec<RequestItem>) -> VerifiedRequest {
        let mut nonce = [0u8; 32];
        aws_lc_rs::rand::fill(&mut nonce).unwrap();
        VerifiedRequest {
            serial: self.vault.serial.clone(),
            device_public_key: self.device_key.info().spki_der.clone(),
            transport_public_key: self.transport_key.info().spki_der.clone(),
            transport_oaep: Default::default(),
            nonce,
            counter,
            items,
        }
    }

    fn receipt(&self, nonce: [u8; 32], counter: u64) -> VerifiedReceipt {
        VerifiedReceipt {
            serial: self.vault.serial.clone(),
            device_public_key: self.device_key.info().spki_der.clone(),
            nonce,
            counter,
            certificates: vec![],
        }
    }
}

fn csr_request(uri: &str) -> CsrRequest {
    CsrRequest { common_name: "app".into(), application_uri: Some(uri.into()), ..Default::default() }
}

fn order_item(label: &str, issuer: &str, origin: KeyOriginKind) -> NewOrderItem {
    NewOrderItem {
        label: label.into(),
        key_algorithm: "rsa2048".into(),
        application_uri: format!("urn:certvault:test:{label}"),
        host_names: vec!["localhost".into(), "127.0.0.1".into()],
        validity_days: 10,
        issuer: issuer.into(),
        key_origin: origin,
    }
}

fn item(label: &str, origin: KeyOrigin) -> RequestItem {
    RequestItem {
        label: label.into(),
        key_algorithm: KeyAlgorithm::Rsa { bits: 2048 },
        application_uri: format!("urn:certvault:test:{label}"),
        host_names: vec![],
        origin,
    }
}

async fn scenario(db: Db) {
    let central_vault = TestVaultd::start("CV-CENTRAL");
    central_vault.generate("plant-ca", KeyAlgorithm::Rsa { bits: 2048 });
    let (key_maker, backup_spki) = common::vaultd_key_maker(&central_vault);
    let openssl_ca = OpensslCa::new();
    let crl_dir = tempfile::tempdir().unwrap();
    let central = Central::new(db)
        .with_external(openssl_ca.external("openssl"))
        .with_key_maker(key_maker, backup_spki)
        .with_crl_dir(crl_dir.path().to_path_buf());
    let db = central.db().clone();
    central.create_ca("plant", &central_vault.key_uri("plant-ca"), "Plant CA", 365).await.unwrap();
    registry::add_device_type(&db, "filler", "").await.unwrap();

    let dongle = Dongle::new("CV-DEV-1");
    registry::entitle(&db, &dongle.entitlement(true)).await.unwrap();
    registry::create_order(
        &db,
        "CV-DEV-1",
        &[
            order_item("app", "ca:plant", KeyOriginKind::Device),
            order_item("ext", "external:openssl", KeyOriginKind::Device),
            order_item("self", "self-signed", KeyOriginKind::Device),
            order_item("made", "ca:plant", KeyOriginKind::Central),
        ],
    )
    .await
    .unwrap();

    // --- negative cases first: each is refused with its own error and changes nothing ---
    let before = snapshot(&db).await;
    let app_csr = dongle.csr("app", "urn:certvault:test:app");
    let ext_csr = dongle.csr("ext", "urn:certvault:test:ext");
    let self_key = {
        let c = dongle.vault.client();
        c.generate("self", KeyAlgorithm::Rsa { bits: 2048 }, Default::default()).unwrap();
        c.key(&KeySelector::Label("self".into())).unwrap()
    };
    let self_cert = certvault::csr::self_signed(
        self_key.as_ref(),
        &csr_request("urn:certvault:test:self"),
        Duration::from_secs(5 * 86_400),
    )
    .unwrap();
    let all_items = || {
        vec![
            item("app", KeyOrigin::Device { csr_der: app_csr.clone() }),
            item("ext", KeyOrigin::Device { csr_der: ext_csr.clone() }),
            item("self", KeyOrigin::DeviceSelfSigned { certificate_der: self_cert.clone() }),
            item("made", KeyOrigin::Central),
        ]
    };

    let stranger = Dongle::new("CV-STRANGER");
    let err = central.process(&stranger.request(0, all_items())).await.unwrap_err();
    assert!(matches!(err, CentralError::UnknownDevice(_)), "{err}");
    assert_eq!(err.http_status(), 404);

    // Same serial, another device key: a forged or swapped dongle.
    let mut forged = dongle.request(0, all_items());
    forged.device_public_key = stranger.device_key.info().spki_der.clone();
    let err = central.process(&forged).await.unwrap_err();
    assert!(matches!(err, CentralError::KeyMismatch { which: "device", .. }), "{err}");
    assert_eq!(err.http_status(), 403);

    let err = central.process(&dongle.request(5, all_items())).await.unwrap_err();
    assert!(matches!(err, CentralError::WrongCounter { got: 5, expected: 0, .. }), "{err}");
    assert_eq!(err.http_status(), 409);

    let err = central.process(&dongle.request(0, vec![item("unordered", KeyOrigin::Central)])).await.unwrap_err();
    assert!(matches!(err, CentralError::NotOrdered { .. }), "{err}");

    // A central-made key requested as a device key, and the wrong algorithm: refused.
    let mut wrong = all_items();
    wrong[3] = item("made", KeyOrigin::Device { csr_der: app_csr.clone() });
    assert!(matches!(central.process(&dongle.request(0, wrong)).await.unwrap_err(), CentralError::NotOrdered { .. }));
    let mut wrong = all_items();
    wrong[0].key_algorithm = KeyAlgorithm::EcP256;
    assert!(matches!(central.process(&dongle.request(0, wrong)).await.unwrap_err(), CentralError::NotOrdered { .. }));

    // A step that fails late: the third item is a broken certificate, after the CA and the external CA have already
    // issued the first two. Nothing of it is recorded.
    let mut failing = all_items();
    failing[2] =
        item("self", KeyOrigin::DeviceSelfSigned { certificate_der: self_cert[..self_cert.len() - 1].to_vec() });
    let err = central.process(&dongle.request(0, failing)).await.unwrap_err();
    assert!(matches!(err, CentralError::Invalid(_) | CentralError::Issuer { .. }), "{err}");

    // A central without a key maker cannot serve a centrally made key, and says so.
    let bare = Central::new(db.clone());
    let err = bare.process(&dongle.request(0, vec![item("made", KeyOrigin::Central)])).await.unwrap_err();
    assert!(matches!(err, CentralError::Unavailable(_)), "{err}");
    assert_eq!(err.http_status(), 501);

    registry::disentitle(&db, "CV-DEV-1").await.unwrap();
    let before_unentitled = snapshot(&db).await;
    let err = central.process(&dongle.request(0, all_items())).await.unwrap_err();
    assert!(matches!(err, CentralError::NotEntitled(_)), "{err}");
    assert_eq!(err.http_status(), 403);
    assert_eq!(snapshot(&db).await, before_unentitled);
    registry::entitle(&db, &dongle.entitlement(false)).await.unwrap();
    assert_eq!(snapshot(&db).await, before, "every refused request left the database as it was");

    // --- the good request ---
    let request = dongle.request(0, all_items());
    let issued = central.process(&request).await.unwrap();
    assert_eq!(issued.serial, "CV-DEV-1");
    assert_eq!(issued.nonce, request.nonce);
    assert_eq!(issued.new_counter, 1);
    let labels: Vec<&str> = issued.items.iter().map(|i| i.label.as_str()).collect();
    assert_eq!(labels, ["app", "ext", "self", "made"]);
    let dir = tempfile::tempdir().unwrap();
    let pem = |name: &str, der: &[u8]| {
        let p = dir.path().join(name);
        write_pem(&p, "CERTIFICATE", der);
        p.display().to_string()
    };
    let app = &issued.items[0];
    let (app_leaf, plant_ca) = (pem("app.pem", &app.chain[0]), pem("plant.pem", &app.chain[1]));
    assert!(openssl(&["verify", "-CAfile", &plant_ca, &app_leaf]).contains(": OK"));
    let ext = &issued.items[1];
    assert!(openssl(&[
        "verify",
        "-CAfile",
        &openssl_ca.ca_pem().display().to_string(),
        &pem("ext.pem", &ext.chain[0])
    ])
    .contains(": OK"));
    assert_eq!(issued.items[2].chain, vec![self_cert.clone()]);
    assert!(issued.items[..3].iter().all(|i| i.sealed_key.is_none()));

    // The centrally made key: sealed to this dongle's transport key, opened inside the dongle's vault, and it is the
    // key the certificate was issued for.
    let made = &issued.items[3];
    let sealed = made.sealed_key.as_ref().expect("a sealed key");
    let pkcs8 = common::open_sealed(sealed, dongle.transport_key.as_ref()).unwrap();
    let made_spki = common::pkcs8_spki(pkcs8);
    assert_eq!(certvault::PublicKey::from_certificate(&made.chain[0]).unwrap().spki_der(), made_spki.as_slice());
    assert!(common::open_sealed(sealed, stranger.transport_key.as_ref()).is_err(), "only this dongle opens it");

    // Recorded: four certificates, the orders issued, the counter advanced, the device listed as unconfirmed.
    let certs = registry::certificates(&db, Some("CV-DEV-1")).await.unwrap();
    assert_eq!(certs.len(), 4);
    assert_eq!(certs[0].issuer, "ca:plant");
    assert_eq!(certs[1].issuer, "external:openssl");
    assert_eq!(certs[2].issuer, "self-signed");
    let device = registry::device(&db, "CV-DEV-1").await.unwrap();
    assert_eq!(device.last_counter, 1);
    assert!(device.transport_public_key.is_some(), "the first request pinned the transport key");
    let orders = registry::orders(&db, Some("CV-DEV-1")).await.unwrap();
    assert_eq!(orders[0].status, "issued");
    assert!(orders[0].items.iter().all(|i| i.status == "issued"));
    assert_eq!(registry::unconfirmed(&db).await.unwrap().len(), 1);
    // Validity 10 days (self-signed 5; the external CA's own policy gives 30): expiring within N days.
    assert_eq!(registry::expiring(&db, 31).await.unwrap().len(), 4);
    assert_eq!(registry::expiring(&db, 11).await.unwrap().len(), 3);
    assert_eq!(registry::expiring(&db, 6).await.unwrap().len(), 1);
    assert!(registry::expiring(&db, 1).await.unwrap().is_empty());

    // --- replay: the same request again ---
    let after = snapshot(&db).await;
    let err = central.process(&request).await.unwrap_err();
    assert!(matches!(err, CentralError::Replay(_)), "{err}");
    assert_eq!(err.http_status(), 409);
    // Fresh nonce, old counter.
    let err = central.process(&dongle.request(0, vec![])).await.unwrap_err();
    assert!(matches!(err, CentralError::WrongCounter { got: 0, expected: 1, .. }), "{err}");
    // An item whose order was issued already.
    let err = central.process(&dongle.request(1, vec![item("made", KeyOrigin::Central)])).await.unwrap_err();
    assert!(matches!(err, CentralError::NotOrdered { .. }), "{err}");
    assert_eq!(snapshot(&db).await, after);

    // --- receipts ---
    let err = central.receipt(&dongle.receipt([7u8; 32], 1)).await.unwrap_err();
    assert!(matches!(err, CentralError::NotFound(_)), "{err}");
    let err = central.receipt(&dongle.receipt(request.nonce, 0)).await.unwrap_err();
    assert!(matches!(err, CentralError::WrongCounter { .. }), "{err}");
    // A receipt that does not confirm what the update carried fulfils nothing.
    let before = snapshot(&db).await;
    let err = central.receipt(&dongle.receipt(request.nonce, 1)).await.unwrap_err();
    assert!(matches!(err, CentralError::Invalid(_)) && err.to_string().contains("does not confirm"), "{err}");
    let mut confirmed = dongle.receipt(request.nonce, 1);
    confirmed.certificates = issued
        .items
        .iter()
        .map(|i| ReceiptCertificate { label: i.label.clone(), sha256: certvault::provision::thumbprint(&i.chain[0]) })
        .collect();
    let mut wrong = confirmed.clone();
    wrong.certificates[0].sha256 = "00".repeat(32);
    assert!(central.receipt(&wrong).await.is_err(), "another certificate than the one issued");
    assert_eq!(snapshot(&db).await, before);
    let outcome = central.receipt(&confirmed).await.unwrap();
    assert_eq!(outcome.fulfilled_orders, vec![orders[0].id]);
    assert_eq!(registry::orders(&db, Some("CV-DEV-1")).await.unwrap()[0].status, "fulfilled");
    assert!(registry::unconfirmed(&db).await.unwrap().is_empty());
    let err = central.receipt(&confirmed).await.unwrap_err();
    assert!(matches!(err, CentralError::Conflict(_)), "{err}");

    // --- revocation: the CRL lists the certificate (checked with openssl crl -text) ---
    let serial = &certs[0].serial_number;
    let revoked = central.revoke(serial, RevocationReason::KeyCompromise).await.unwrap();
    assert_eq!(revoked.revocation_reason.as_deref(), Some("key-compromise"));
    assert!(matches!(
        central.revoke(serial, RevocationReason::KeyCompromise).await.unwrap_err(),
        CentralError::Conflict(_)
    ));
    let crl_path = crl_dir.path().join("plant.crl");
    assert_eq!(std::fs::read(&crl_path).unwrap(), central.crl("plant").await.unwrap());
    let text = openssl(&["crl", "-inform", "DER", "-in", &crl_path.display().to_string(), "-noout", "-text"]);
    assert!(text.to_ascii_lowercase().contains(&serial.to_ascii_lowercase()), "serial {serial} not in\n{text}");
    assert!(text.contains("Key Compromise"), "{text}");
    openssl(&["crl", "-inform", "DER", "-in", &crl_path.display().to_string(), "-noout", "-CAfile", &plant_ca]);
    // The external CA's certificate is not ours to revoke in a CRL, but it is marked revoked.
    central.revoke(&certs[1].serial_number, RevocationReason::Superseded).await.unwrap();

    // --- key backup and restore to a replacement dongle ---
    let replacement = Dongle::new("CV-DEV-2");
    let new_device = central.replace_dongle("CV-DEV-1", &replacement.entitlement(true)).await.unwrap();
    assert!(new_device.entitled);
    assert!(!registry::device(&db, "CV-DEV-1").await.unwrap().entitled);
    let err = central.process(&dongle.request(1, vec![])).await.unwrap_err();
    assert!(matches!(err, CentralError::NotEntitled(_)), "the old dongle is out: {err}");
    let restored = central.process(&replacement.request(0, vec![])).await.unwrap();
    assert_eq!(restored.items.len(), 1);
    let item = &restored.items[0];
    assert_eq!(item.label, "made");
    assert_eq!(item.chain, made.chain);
    let pkcs8 = common::open_sealed(item.sealed_key.as_ref().unwrap(), replacement.transport_key.as_ref()).unwrap();
    assert_eq!(common::pkcs8_spki(pkcs8), made_spki, "the same key, re-sealed to the new dongle");
    assert!(common::open_sealed(item.sealed_key.as_ref().unwrap(), dongle.transport_key.as_ref()).is_err());
    // Restored once.
    assert!(central.process(&replacement.request(1, vec![])).await.unwrap().items.is_empty());
    central.db().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    scenario(common::sqlite_db(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_on_postgres() {
    let Some(pg) = common::PgCluster::start() else { return };
    scenario(Db::open(&pg.url).await.unwrap()).await;
}

/// Two requests of one dongle with the same counter at the same time: exactly one is served.
async fn concurrent(db: Db) {
    let central = std::sync::Arc::new(Central::new(db));
    registry::add_device_type(central.db(), "filler", "").await.unwrap();
    let dongle = Dongle::new("CV-RACE");
    registry::entitle(central.db(), &dongle.entitlement(true)).await.unwrap();
    for round in 0..5u64 {
        let (a, b) = (dongle.request(round, vec![]), dongle.request(round, vec![]));
        let (c1, c2) = (central.clone(), central.clone());
        let (ra, rb) = tokio::join!(
            tokio::spawn(async move { c1.process(&a).await }),
            tokio::spawn(async move { c2.process(&b).await })
        );
        let results = [ra.unwrap(), rb.unwrap()];
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "round {round}: {results:?}");
        let err = results.into_iter().find_map(|r| r.err()).unwrap();
        assert!(matches!(err, CentralError::WrongCounter { .. }), "{err}");
    }
    assert_eq!(registry::device(central.db(), "CV-RACE").await.unwrap().last_counter, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    concurrent(common::sqlite_db(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_postgres() {
    let Some(pg) = common::PgCluster::start() else { return };
    concurrent(Db::open(&pg.url).await.unwrap()).await;
}
