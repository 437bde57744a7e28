//! vaultd's `import-sealed` operation with real daemons: one plays the server's dongle, one the central's key maker.
//! A key sealed to the dongle's transport key is opened inside the daemon and stored; refusals (another vault's
//! transport key, garbage, a key that is not the certificate's, reserved and duplicate labels, no transport key)
//! leave the container file unchanged. Every key is made at run time.

mod common;

use std::time::Duration;

use certvault::provision::KeyMaker;
use certvault::{csr, KeyAlgorithm, KeyPolicy, KeySelector, KeyStore, SignAlg, VaultError};
use common::vaultd::Vaultd;

fn request() -> csr::CsrRequest {
    csr::CsrRequest {
        common_name: "machine-a".into(),
        organization: None,
        application_uri: Some("urn:machine-a".into()),
        dns_names: vec!["localhost".into()],
        ip_addresses: vec![],
    }
}

#[test]
fn import_sealed_opens_the_key_inside_vaultd_and_refuses_what_is_not_for_it() {
    let dongle = Vaultd::start("CV-SERVER");
    let c = dongle.client();
    let central = Vaultd::start("CV-CENTRAL");
    let maker = central.client();
    let ca = maker.generate("ca", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default()).unwrap();
    let ca = maker.key(&KeySelector::Id(ca.id)).unwrap();
    let ca_cert = csr::self_signed_ca(ca.as_ref(), "test CA", Duration::from_secs(3600)).unwrap();
    let issue = |spki: &[u8]| csr::issue(ca.as_ref(), &ca_cert, spki, &request(), Duration::from_secs(3600)).unwrap();

    // Before `device init` there is no transport key.
    let other = Vaultd::start("CV-OTHER");
    let other_transport = other.client().device_init().unwrap().transport_key.unwrap().spki_der;
    let foreign = maker.generate_sealed(KeyAlgorithm::Rsa { bits: 2048 }, &[other_transport]).unwrap();
    let e = c.import_sealed("opcua.new", &foreign.sealed[0], Some(&issue(&foreign.spki))).unwrap_err();
    assert!(e.to_string().contains("device init"), "{e}");

    let transport = c.device_init().unwrap().transport_key.unwrap().spki_der;
    let made = maker.generate_sealed(KeyAlgorithm::Rsa { bits: 2048 }, std::slice::from_ref(&transport)).unwrap();
    let cert = issue(&made.spki);
    let before = std::fs::read(&dongle.container).unwrap();
    let keys_before = c.list().unwrap().len();

    let e = c.import_sealed("opcua.new", &foreign.sealed[0], Some(&issue(&foreign.spki))).unwrap_err();
    assert!(matches!(e, VaultError::AccessDenied(_)), "another vault's key: {e}");
    let e = c.import_sealed("opcua.new", b"garbage", Some(&cert)).unwrap_err();
    assert!(matches!(e, VaultError::InvalidInput(_)), "garbage: {e}");
    let mut tampered = made.sealed[0].to_vec();
    let n = tampered.len();
    tampered[n - 3] ^= 1;
    let e = c.import_sealed("opcua.new", &tampered, Some(&cert)).unwrap_err();
    assert!(matches!(e, VaultError::DecryptFailed), "tampered: {e}");
    let second = maker.generate_sealed(KeyAlgorithm::Rsa { bits: 2048 }, &[transport]).unwrap();
    let e = c.import_sealed("opcua.new", &second.sealed[0], Some(&cert)).unwrap_err();
    assert!(e.to_string().contains("does not belong to the certificate"), "mismatch: {e}");
    let e = c.import_sealed("certvault:transport", &made.sealed[0], Some(&cert)).unwrap_err();
    assert!(e.to_string().contains("belong to the vault"), "reserved label: {e}");
    assert_eq!(std::fs::read(&dongle.container).unwrap(), before, "no refusal changed the container");
    assert_eq!(c.list().unwrap().len(), keys_before);

    let info = c.import_sealed("opcua.new", &made.sealed[0], Some(&cert)).unwrap();
    assert_eq!(info.spki_der, made.spki);
    assert!(!info.made_inside && info.non_exportable);
    let e = c.import_sealed("opcua.new", &second.sealed[0], None).unwrap_err();
    assert!(matches!(e, VaultError::DuplicateLabel(_)), "duplicate: {e}");
    // The key signs inside the daemon, and the certificate verifies against it.
    let key = c.key(&KeySelector::Label("opcua.new".into())).unwrap();
    let sig = key.sign(SignAlg::RsaPkcs1Sha256, b"hello").unwrap();
    certvault::PublicKey::from_certificate(&cert).unwrap().verify(SignAlg::RsaPkcs1Sha256, b"hello", &sig).unwrap();
    let audit = c.audit(0, 1000).unwrap();
    assert!(audit.iter().any(|r| r.op == "import-sealed" && r.ok), "audited");
    assert!(audit.iter().any(|r| r.op == "import-sealed" && !r.ok), "refusals audited too");
}
