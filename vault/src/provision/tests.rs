//! Round trips and tampering of the three files and of sealed keys, and `openssl cms` reading them.

use std::process::Command;
use std::time::Duration;

use super::*;
use crate::csr::{self, CsrRequest};
use crate::soft::{generate_pkcs8, SoftKey};
use crate::{KeyAlgorithm, KeyPolicy, VaultKey};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn key(alg: KeyAlgorithm, label: &str) -> SoftKey {
    SoftKey::from_pkcs8(generate_pkcs8(alg).unwrap(), vec![1], label.into(), true, KeyPolicy::default()).unwrap()
}

struct World {
    device: SoftKey,
    transport: SoftKey,
    central: SoftKey,
    central_cert: Vec<u8>,
}

fn world() -> World {
    let central = key(KeyAlgorithm::EcP256, "central");
    let central_cert = csr::self_signed_ca(&central, "certvault central", Duration::from_secs(86_400)).unwrap();
    World {
        device: key(KeyAlgorithm::EcP256, DEVICE_KEY_LABEL),
        transport: key(KeyAlgorithm::Rsa { bits: 2048 }, TRANSPORT_KEY_LABEL),
        central,
        central_cert,
    }
}

fn request(w: &World) -> Request {
    let app = key(KeyAlgorithm::Rsa { bits: 2048 }, "opcua");
    let csr = csr::create_csr(
        &app,
        &CsrRequest { common_name: "machine-a".into(), application_uri: Some("urn:a".into()), ..Default::default() },
    )
    .unwrap();
    Request::new(
        "CV-1".into(),
        w.device.info().spki_der.clone(),
        w.transport.info().spki_der.clone(),
        fresh_nonce().unwrap().to_vec(),
        4,
        vec![
            RequestItem {
                label: "opcua".into(),
                algorithm: KeyAlgorithm::Rsa { bits: 2048 },
                application_uri: "urn:a".into(),
                hosts: vec!["machine-a".into()],
                key_origin: KeyOrigin::Device,
                csr: Some(csr),
                certificate: None,
            },
            RequestItem {
                label: "opcua-ecc".into(),
                algorithm: KeyAlgorithm::EcP256,
                application_uri: "urn:a".into(),
                hosts: vec![],
                key_origin: KeyOrigin::Central,
                csr: None,
                certificate: None,
            },
        ],
    )
}

fn update(w: &World, req: &Request) -> (Update, Vec<u8>) {
    let made = key(KeyAlgorithm::EcP256, "opcua-ecc");
    let cert = csr::self_signed(
        &made,
        &CsrRequest { common_name: "x".into(), ..Default::default() },
        Duration::from_secs(3600),
    )
    .unwrap();
    let sealed = seal::seal(made.pkcs8(), &req.transport_recipient()).unwrap();
    let u = Update::new(
        req.serial.clone(),
        req.nonce.clone(),
        req.counter,
        vec![UpdateItem {
            label: "opcua-ecc".into(),
            chain: vec![cert, w.central_cert.clone()],
            sealed_key: Some(sealed),
        }],
    );
    let der = u.sign(&w.central, std::slice::from_ref(&w.central_cert)).unwrap();
    (u, der)
}

fn expected(req: &Request) -> Expected<'_> {
    Expected { serial: &req.serial, nonce: &req.nonce, counter: req.counter + 1 }
}

#[test]
fn request_round_trips() -> TestResult {
    let w = world();
    let req = request(&w);
    let der = req.sign(&w.device)?;
    assert_eq!(verify_request(&der)?, req);
    Ok(())
}

#[test]
fn update_round_trips_and_its_sealed_key_opens_in_the_vault() -> TestResult {
    let w = world();
    let req = request(&w);
    let (_, der) = update(&w, &req);
    let got = verify_update(&der, &w.central_cert, &expected(&req))?;
    assert_eq!(got.counter, 5);
    let sealed = got.items[0].sealed_key.as_ref().ok_or("no sealed key")?;
    let pkcs8 = seal::open(sealed, &w.transport)?;
    let opened = SoftKey::from_pkcs8(pkcs8, vec![2], "x".into(), false, KeyPolicy::default())?;
    let leaf = crate::PublicKey::from_certificate(&got.items[0].chain[0])?;
    assert_eq!(opened.info().spki_der, leaf.spki_der());
    // Another transport key cannot open it, and says why.
    let other = key(KeyAlgorithm::Rsa { bits: 2048 }, "other");
    assert!(matches!(seal::open(sealed, &other), Err(ProvisionError::WrongSigner { .. })));
    Ok(())
}

#[test]
fn receipt_round_trips() -> TestResult {
    let w = world();
    let r = Receipt::new(
        "CV-1".into(),
        w.device.info().spki_der.clone(),
        5,
        vec![7; 32],
        vec![Thumbprint { label: "opcua".into(), sha256: thumbprint(b"cert") }],
    );
    let der = r.sign(&w.device)?;
    assert_eq!(verify_receipt(&der, &w.device.info().spki_der)?, r);
    let other = key(KeyAlgorithm::EcP256, "other");
    assert!(matches!(verify_receipt(&der, &other.info().spki_der), Err(ProvisionError::WrongSigner { .. })));
    Ok(())
}

/// Flips every bit of every byte in turn (one byte at a time) and checks the file is refused.
fn every_flip_rejected(der: &[u8], check: impl Fn(&[u8]) -> std::result::Result<(), ProvisionError>) {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..der.len() {
        for mask in [0x01u8, 0x80] {
            let mut bad = der.to_vec();
            bad[i] ^= mask;
            match check(&bad) {
                Ok(()) => panic!("flipping byte {i} (mask {mask:#x}) of {} was accepted", der.len()),
                Err(e) => {
                    let name = format!("{e:?}");
                    *kinds.entry(name.split([' ', '{', '(']).next().unwrap_or("").to_string()).or_default() += 1;
                }
            }
        }
    }
    // Truncation anywhere is refused too.
    for n in [0, 1, der.len() / 2, der.len() - 1] {
        assert!(check(&der[..n]).is_err(), "truncated to {n} bytes was accepted");
    }
    eprintln!("rejections by kind: {kinds:?}");
    assert!(kinds.contains_key("BadSignature") && kinds.contains_key("Malformed"), "{kinds:?}");
}

#[test]
fn every_flipped_byte_of_a_request_is_rejected() {
    let w = world();
    let der = request(&w).sign(&w.device).unwrap();
    every_flip_rejected(&der, |b| verify_request(b).map(|_| ()));
}

#[test]
fn every_flipped_byte_of_an_update_is_rejected() {
    let w = world();
    let req = request(&w);
    let (_, der) = update(&w, &req);
    every_flip_rejected(&der, |b| verify_update(b, &w.central_cert, &expected(&req)).map(|_| ()));
}

#[test]
fn every_flipped_byte_of_a_receipt_is_rejected() {
    let w = world();
    let spki = w.device.info().spki_der.clone();
    let der = Receipt::new("CV-1".into(), spki.clone(), 1, vec![1; 32], vec![]).sign(&w.device).unwrap();
    every_flip_rejected(&der, |b| verify_receipt(b, &spki).map(|_| ()));
}

#[test]
fn every_flipped_byte_of_a_sealed_key_is_rejected() {
    let w = world();
    let pkcs8 = generate_pkcs8(KeyAlgorithm::EcP256).unwrap();
    for oaep in [OaepHash::Sha256, OaepHash::Sha1] {
        let sealed = seal::seal(&pkcs8, &Recipient { spki: w.transport.info().spki_der.clone(), oaep }).unwrap();
        assert_eq!(seal::open(&sealed, &w.transport).unwrap().as_slice(), pkcs8.as_slice());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            // Key wrap checks its own integrity: no flipped byte yields a key.
            assert!(seal::open(&bad, &w.transport).is_err(), "flip at {i} ({oaep:?}) was accepted");
        }
    }
}

#[test]
fn replays_and_mix_ups_get_their_own_errors() -> TestResult {
    let w = world();
    let req = request(&w);
    let (_, der) = update(&w, &req);
    let ok = expected(&req);
    let e = verify_update(&der, &w.central_cert, &Expected { serial: "CV-2", ..ok.clone() }).unwrap_err();
    assert!(matches!(e, ProvisionError::WrongSerial { .. }), "{e}");
    let other_nonce = [9u8; 32];
    let e = verify_update(&der, &w.central_cert, &Expected { nonce: &other_nonce, ..ok.clone() }).unwrap_err();
    assert!(matches!(e, ProvisionError::WrongNonce { .. }), "{e}");
    let e = verify_update(&der, &w.central_cert, &Expected { counter: 6, ..ok.clone() }).unwrap_err();
    assert!(matches!(e, ProvisionError::WrongCounter { expected: 6, found: 5, .. }), "{e}");
    assert!(e.to_string().contains("replayed or reordered"), "{e}");
    // Another central (a forger with its own certificate) is refused before anything else is looked at.
    let forger = key(KeyAlgorithm::EcP256, "central");
    let forger_cert = csr::self_signed_ca(&forger, "certvault central", Duration::from_secs(86_400))?;
    let (u, _) = update(&w, &req);
    let forged = u.sign(&forger, std::slice::from_ref(&forger_cert))?;
    let e = verify_update(&forged, &w.central_cert, &ok).unwrap_err();
    assert!(matches!(e, ProvisionError::WrongSigner { .. }), "{e}");
    // The forger's file carrying the real central's certificate still fails: the signature is not the central's.
    let mixed = u.sign(&forger, &[forger_cert.clone(), w.central_cert.clone()])?;
    let e = verify_update(&mixed, &w.central_cert, &ok).unwrap_err();
    assert!(matches!(e, ProvisionError::WrongSigner { .. }), "{e}");
    // A request where an update is expected.
    let e = verify_update(&req.sign(&w.device)?, &w.central_cert, &ok).unwrap_err();
    assert!(matches!(e, ProvisionError::WrongKind { .. }), "{e}");
    assert!(e.to_string().contains("(a request file)"), "{e}");
    // A request signed by another key than the one it names.
    let thief = key(KeyAlgorithm::EcP256, DEVICE_KEY_LABEL);
    assert!(req.sign(&thief).is_err(), "sign refuses a key the request does not name");
    let mut stolen = req.clone();
    stolen.device_key = thief.info().spki_der.clone();
    let der = stolen.sign(&thief)?;
    // It verifies (the central then finds the key is not the entitled one) but names the thief's key.
    assert_eq!(verify_request(&der)?.device_key, thief.info().spki_der);
    Ok(())
}

#[test]
fn request_rules_are_enforced() {
    let w = world();
    let mut req = request(&w);
    req.items[0].csr = None;
    assert!(req.sign(&w.device).unwrap_err().to_string().contains("needs a CSR"));
    let mut req = request(&w);
    req.items[1].label = TRANSPORT_KEY_LABEL.into();
    assert!(req.sign(&w.device).unwrap_err().to_string().contains("reserved"));
    let mut req = request(&w);
    req.nonce.truncate(8);
    assert!(req.sign(&w.device).is_err());
}

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl").args(args).output().expect("openssl runs")
}

#[test]
fn openssl_cms_reads_verifies_and_decrypts_our_files() -> TestResult {
    let dir = tempfile::tempdir()?;
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let w = world();
    let req = request(&w);
    std::fs::write(p("req.p7"), req.sign(&w.device)?)?;
    let (_, upd) = update(&w, &req);
    std::fs::write(p("upd.p7"), &upd)?;
    std::fs::write(p("central.der"), &w.central_cert)?;
    let receipt = Receipt::new("CV-1".into(), w.device.info().spki_der.clone(), 5, req.nonce.clone(), vec![]);
    std::fs::write(p("rec.p7"), receipt.sign(&w.device)?)?;
    for f in ["req.p7", "upd.p7", "rec.p7"] {
        let out = openssl(&["cms", "-cmsout", "-print", "-inform", "DER", "-in", &p(f)]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("1.3.6.1.4.1.59142.1."), "{text}");
        assert!(text.contains("messageDigest"), "{text}");
    }
    // The update verifies with the central's certificate as trust anchor, and the content is our JSON.
    let out = openssl(&["x509", "-inform", "DER", "-in", &p("central.der"), "-out", &p("central.pem")]);
    assert!(out.status.success());
    let out = openssl(&[
        "cms",
        "-verify",
        "-inform",
        "DER",
        "-in",
        &p("upd.p7"),
        "-CAfile",
        &p("central.pem"),
        "-purpose",
        "any",
        "-out",
        &p("upd.json"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(p("upd.json"))?)?;
    assert_eq!(json["serial"], "CV-1");
    // A tampered update fails openssl's verification too.
    let mut bad = upd.clone();
    let n = bad.len();
    bad[n / 3] ^= 1;
    std::fs::write(p("bad.p7"), &bad)?;
    let out = openssl(&["cms", "-verify", "-inform", "DER", "-in", &p("bad.p7"), "-CAfile", &p("central.pem")]);
    assert!(!out.status.success());
    // A sealed key to a transport key openssl holds (made at run time in the temp dir) decrypts with openssl.
    let out = openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &p("t.pem")]);
    assert!(out.status.success());
    let out =
        openssl(&["pkey", "-in", &p("t.pem"), "-pubout", "-outform", "DER", "-out", &p("t.spki")]).status.success();
    assert!(out);
    let pkcs8 = generate_pkcs8(KeyAlgorithm::EcP256)?;
    std::fs::write(p("sealed.p7"), seal::seal(&pkcs8, &Recipient::new(std::fs::read(p("t.spki"))?))?)?;
    let out = openssl(&["cms", "-cmsout", "-print", "-inform", "DER", "-in", &p("sealed.p7")]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("rsaesOaep"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("id-aes256-wrap-pad"));
    for oaep in [OaepHash::Sha256, OaepHash::Sha1] {
        let sealed = seal::seal(&pkcs8, &Recipient { spki: std::fs::read(p("t.spki"))?, oaep })?;
        std::fs::write(p("sealed.p7"), sealed)?;
        let out = openssl(&[
            "cms",
            "-decrypt",
            "-binary",
            "-inform",
            "DER",
            "-in",
            &p("sealed.p7"),
            "-inkey",
            &p("t.pem"),
            "-out",
            &p("k.der"),
        ]);
        assert!(out.status.success(), "{oaep:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read(p("k.der"))?, pkcs8.as_slice(), "{oaep:?}");
    }
    Ok(())
}

fn self_signed_item(label: &str) -> RequestItem {
    let app = key(KeyAlgorithm::EcP256, label);
    let certificate = csr::self_signed(
        &app,
        &CsrRequest { common_name: "machine-a".into(), application_uri: Some("urn:a".into()), ..Default::default() },
        Duration::from_secs(86_400),
    )
    .unwrap();
    RequestItem {
        label: label.into(),
        algorithm: KeyAlgorithm::EcP256,
        application_uri: "urn:a".into(),
        hosts: vec![],
        key_origin: KeyOrigin::SelfSigned,
        csr: None,
        certificate: Some(certificate),
    }
}

#[test]
fn self_signed_item_round_trips_and_is_tamper_evident() -> TestResult {
    let w = world();
    let mut req = request(&w);
    req.items.push(self_signed_item("opcua-self"));
    let der = req.sign(&w.device)?;
    let got = verify_request(&der)?;
    assert_eq!(got, req);
    assert_eq!(got.items[2].key_origin, KeyOrigin::SelfSigned);
    let json = String::from_utf8_lossy(&der).into_owned();
    assert!(json.contains("\"key_origin\": \"self-signed\""), "origin spelled self-signed in the JSON");
    // One changed byte inside the certificate (inside the signed JSON) is refused.
    let cert_b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(req.items[2].certificate.as_ref().ok_or("no cert")?)
    };
    let at = json.find(&cert_b64[..40]).ok_or("certificate not found in the file")? + 20;
    let mut bad = der.clone();
    bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
    assert!(matches!(verify_request(&bad), Err(ProvisionError::DigestMismatch { .. })));
    Ok(())
}

#[test]
fn self_signed_item_needs_its_certificate_and_nothing_else() {
    let w = world();
    let mut req = request(&w);
    let mut item = self_signed_item("s");
    item.certificate = None;
    req.items = vec![item.clone()];
    assert!(matches!(req.sign(&w.device), Err(ProvisionError::Invalid { .. })));
    item = self_signed_item("s");
    item.csr = Some(vec![1, 2, 3]);
    req.items = vec![item];
    assert!(matches!(req.sign(&w.device), Err(ProvisionError::Invalid { .. })));
    let mut central = request(&w).items[1].clone();
    central.certificate = Some(vec![1]);
    req.items = vec![central];
    assert!(matches!(req.sign(&w.device), Err(ProvisionError::Invalid { .. })));
}
