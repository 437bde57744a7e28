//! The operator HTTP+JSON API over real HTTP on 127.0.0.1 (an OS-picked port): the whole operator flow, a request
//! and a receipt as real signed files (CMS, `certvault::provision`) through the real envelope, revocation and the CRL download checked with
//! `openssl crl -text`, and errors as JSON with fitting statuses.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use certvault::csr::CsrRequest;
use certvault::provision::{self, Expected, KeyOrigin, Receipt, Request, RequestItem};
use certvault::SharedKey;
use certvault::{KeyAlgorithm, KeySelector, KeyStore};
use certvault_central::envelope::ProvisionEnvelope;
use certvault_central::Central;
use common::{http, openssl, TestVaultd};
use serde_json::{json, Value};

async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
    let (status, body) = http(addr, method, path, bytes.as_deref()).await;
    let value = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap_or(Value::Null) };
    (status, value)
}

fn assert_error(got: (u16, Value), status: u16, kind: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["kind"], kind, "{}", got.1);
    assert!(got.1["error"].as_str().is_some_and(|e| !e.is_empty()), "{}", got.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_api_over_http() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let central_vault = TestVaultd::start("CV-CENTRAL");
    central_vault.generate("plant-ca", KeyAlgorithm::Rsa { bits: 2048 });
    let dongle = TestVaultd::start("CV-DEV-1");
    let device_key = dongle.generate("device-identity", KeyAlgorithm::EcP256);
    let transport_key = dongle.generate("transport", KeyAlgorithm::Rsa { bits: 2048 });
    dongle.generate("app", KeyAlgorithm::Rsa { bits: 2048 });
    let signer = central_vault.generate("update-signer", KeyAlgorithm::EcP256);
    let signer_cert =
        certvault::csr::self_signed_ca(signer.as_ref(), "central updates", std::time::Duration::from_secs(86_400))
            .unwrap();
    let envelope = ProvisionEnvelope::new(signer, vec![signer_cert.clone()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let central = Central::new(common::sqlite_db(dir.path()).await)
        .with_envelope(Arc::new(envelope))
        .with_crl_dir(dir.path().join("crl"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(certvault_central::api::serve(Arc::new(central), None, listener, async move {
        let _ = stopped.await;
    }));

    // CA, device type, entitlement, order.
    let (s, ca) = call(
        addr,
        "POST",
        "/api/cas",
        Some(json!({"name": "plant", "key_uri": central_vault.key_uri("plant-ca"), "common_name": "Plant CA"})),
    )
    .await;
    assert_eq!(s, 201, "{ca}");
    assert_eq!(call(addr, "GET", "/api/cas", None).await.1.as_array().unwrap().len(), 1);
    let (s, _) = call(addr, "POST", "/api/device-types", Some(json!({"name": "filler"}))).await;
    assert_eq!(s, 201);
    assert_error(call(addr, "POST", "/api/device-types", Some(json!({"name": "filler"}))).await, 409, "conflict");
    assert_error(
        (http(addr, "POST", "/api/device-types", Some(b"{not json")).await.0, {
            let (_, b) = http(addr, "POST", "/api/device-types", Some(b"{not json")).await;
            serde_json::from_slice(&b).unwrap()
        }),
        400,
        "invalid",
    );
    let device_spki = device_key.info().spki_der.clone();
    let (s, dev) = call(
        addr,
        "POST",
        "/api/devices",
        Some(json!({"serial": "CV-DEV-1", "device_type": "filler", "device_public_key": B64.encode(&device_spki)})),
    )
    .await;
    assert_eq!(s, 200, "{dev}");
    assert_eq!(dev["entitled"], true);
    let item = json!({"label": "app", "key_algorithm": "rsa2048", "application_uri": "urn:certvault:test:app",
        "host_names": ["localhost"], "validity_days": 200, "issuer": "ca:plant", "key_origin": "device"});
    assert_error(
        call(addr, "POST", "/api/orders", Some(json!({"device": "CV-NOPE", "items": [item.clone()]}))).await,
        404,
        "unknown-device",
    );
    let (s, order) = call(addr, "POST", "/api/orders", Some(json!({"device": "CV-DEV-1", "items": [item]}))).await;
    assert_eq!(s, 201, "{order}");
    assert_eq!(order["status"], "open");

    // The device's request, through the envelope, answered with the update.
    let csr = dongle
        .client()
        .create_csr(&KeySelector::Label("app".into()), &CsrRequest { common_name: "app".into(), ..Default::default() })
        .unwrap();
    let request = |nonce: [u8; 32], counter: u64, signer: &SharedKey| {
        Request::new(
            "CV-DEV-1".into(),
            signer.info().spki_der.clone(),
            transport_key.info().spki_der.clone(),
            nonce.to_vec(),
            counter,
            vec![RequestItem {
                label: "app".into(),
                algorithm: KeyAlgorithm::Rsa { bits: 2048 },
                application_uri: "urn:certvault:test:app".into(),
                hosts: vec![],
                key_origin: KeyOrigin::Device,
                csr: Some(csr.clone()),
                certificate: None,
            }],
        )
        .sign(signer.as_ref())
        .unwrap()
    };
    let body = request([0x42; 32], 0, &device_key);
    let (s, update) = http(addr, "POST", "/api/requests", Some(&body)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&update));
    let expected = Expected { serial: "CV-DEV-1", nonce: &[0x42; 32], counter: 1 };
    let issued = provision::verify_update(&update, &signer_cert, &expected).unwrap();
    assert_eq!(issued.counter, 1);
    assert_eq!(issued.items[0].chain.len(), 2);

    // Replay, wrong counter, another device key.
    let (s, b) = http(addr, "POST", "/api/requests", Some(&body)).await;
    assert_error((s, serde_json::from_slice(&b).unwrap()), 409, "replay");
    let (s, b) = http(addr, "POST", "/api/requests", Some(&request([0x43; 32], 0, &device_key))).await;
    assert_error((s, serde_json::from_slice(&b).unwrap()), 409, "wrong-counter");
    let (s, b) = http(addr, "POST", "/api/requests", Some(&request([0x44; 32], 1, &transport_key))).await;
    assert_error((s, serde_json::from_slice(&b).unwrap()), 403, "key-mismatch");
    let mut forged = request([0x45; 32], 1, &device_key);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let (s, b) = http(addr, "POST", "/api/requests", Some(&forged)).await;
    assert_error((s, serde_json::from_slice(&b).unwrap()), 400, "invalid");

    // Receipt: the order is fulfilled and the device confirmed.
    assert_eq!(call(addr, "GET", "/api/devices/unconfirmed", None).await.1.as_array().unwrap().len(), 1);
    let thumbprints =
        vec![provision::Thumbprint { label: "app".into(), sha256: provision::thumbprint(&issued.items[0].chain[0]) }];
    let receipt =
        Receipt::new("CV-DEV-1".into(), device_spki.clone(), 1, vec![0x42; 32], thumbprints).sign(device_key.as_ref());
    let (s, b) = http(addr, "POST", "/api/receipts", Some(&receipt.unwrap())).await;
    let outcome: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(s, 200, "{outcome}");
    assert_eq!(outcome["fulfilled_orders"].as_array().unwrap().len(), 1);
    assert!(call(addr, "GET", "/api/devices/unconfirmed", None).await.1.as_array().unwrap().is_empty());
    assert_eq!(call(addr, "GET", "/api/orders?device=CV-DEV-1", None).await.1[0]["status"], "fulfilled");

    // Listings.
    let (_, certs) = call(addr, "GET", "/api/certificates?device=CV-DEV-1", None).await;
    assert_eq!(certs.as_array().unwrap().len(), 1);
    let serial = certs[0]["serial_number"].as_str().unwrap().to_owned();
    assert_eq!(call(addr, "GET", "/api/certificates/expiring?days=201", None).await.1.as_array().unwrap().len(), 1);
    assert!(call(addr, "GET", "/api/certificates/expiring?days=30", None).await.1.as_array().unwrap().is_empty());
    let (s, der) = http(addr, "GET", &format!("/api/certificates/{serial}"), None).await;
    assert_eq!(s, 200);
    assert_eq!(der, issued.items[0].chain[0]);
    assert_eq!(call(addr, "GET", "/api/devices", None).await.1.as_array().unwrap().len(), 1);
    assert_eq!(call(addr, "GET", "/api/devices/CV-DEV-1", None).await.1["last_counter"], 1);
    assert_error(call(addr, "GET", "/api/devices/CV-NOPE", None).await, 404, "unknown-device");

    // Revoke; the CRL download lists it.
    let (s, r) =
        call(addr, "POST", &format!("/api/certificates/{serial}/revoke"), Some(json!({"reason": "key-compromise"})))
            .await;
    assert_eq!(s, 200, "{r}");
    assert_error(call(addr, "POST", &format!("/api/certificates/{serial}/revoke"), None).await, 409, "conflict");
    assert_error(
        call(addr, "POST", "/api/certificates/ab/revoke", Some(json!({"reason": "bored"}))).await,
        400,
        "invalid",
    );
    let (s, crl) = http(addr, "GET", "/api/cas/plant/crl", None).await;
    assert_eq!(s, 200);
    let crl_path = dir.path().join("download.crl");
    std::fs::write(&crl_path, &crl).unwrap();
    let text = openssl(&["crl", "-inform", "DER", "-in", &crl_path.display().to_string(), "-noout", "-text"]);
    assert!(text.to_ascii_lowercase().contains(&serial), "serial {serial} not in\n{text}");
    assert_eq!(std::fs::read(dir.path().join("crl/plant.crl")).unwrap(), crl, "published to the file too");
    assert_error(call(addr, "GET", "/api/cas/nope/crl", None).await, 404, "not-found");

    // A replacement dongle takes over: the old one is out, the new one entitled with the same device type.
    let (s, new_dev) = call(addr, "POST", "/api/devices/CV-DEV-1/replace", Some(json!({"serial": "CV-DEV-1B"}))).await;
    assert_eq!(s, 200, "{new_dev}");
    assert_eq!(new_dev["device_type"], "filler");
    assert_eq!(new_dev["entitled"], true);
    assert_eq!(call(addr, "GET", "/api/devices/CV-DEV-1", None).await.1["replaced_by"], "CV-DEV-1B");
    assert_error(
        call(addr, "POST", "/api/devices/CV-DEV-1/replace", Some(json!({"serial": "CV-DEV-1B"}))).await,
        409,
        "conflict",
    );
    assert_eq!(call(addr, "POST", "/api/devices/CV-DEV-1B/disentitle", None).await.0, 200);

    // Withdrawn entitlement.
    assert_eq!(call(addr, "POST", "/api/devices/CV-DEV-1/disentitle", None).await.0, 200);
    let (s, b) = http(addr, "POST", "/api/requests", Some(&request([0x46; 32], 1, &device_key))).await;
    assert_error((s, serde_json::from_slice(&b).unwrap()), 403, "not-entitled");
    assert_error(call(addr, "GET", "/api/nothing-here", None).await, 404, "not-found");

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_endpoint_says_when_the_file_formats_are_not_wired() {
    let dir = tempfile::tempdir().unwrap();
    let central = Central::new(common::sqlite_db(dir.path()).await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(certvault_central::api::serve(Arc::new(central), None, listener, std::future::pending()));
    let (s, b) = http(addr, "POST", "/api/requests", Some(b"anything")).await;
    assert_error((s, serde_json::from_slice(&b).unwrap()), 501, "unavailable");
    server.abort();
}
