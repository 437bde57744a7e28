//! The PKCS#11 backend against a real SoftHSM2 token.
//!
//! PKCS#11 initialization and `SOFTHSM2_CONF` are per process, and the tests of this binary run as threads of one
//! process, so one token directory (and config) is made for the whole binary, with one token per test (its own
//! label), all created before the module is first initialized.
//!
//! Without SoftHSM2 the tests skip with a message, unless `CERTVAULT_REQUIRE_SOFTHSM` is set (CI), where they fail.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use certvault::csr::{self, CsrRequest};
use certvault::pkcs11::{Pkcs11Key, Pkcs11Token};
use certvault::uri::Pkcs11Uri;
use certvault::{
    soft, DecryptAlg, KeyAlgorithm, KeyPolicy, KeySelector, KeyStore, PublicKey, SignAlg, VaultError, VaultKey,
};

use common::softhsm::{MODULE, PIN};

/// One token per test: tests may run in parallel, and login state is per token.
const TOKENS: &[&str] = &[
    "rsa-sign",
    "ec-sign",
    "decrypt",
    "tamper",
    "misc",
    "wrongpin",
    "certs",
    "import",
    "uri",
    "concurrent",
    "attrs",
    "fallback",
];

fn token(label: &str) -> Option<Pkcs11Token> {
    common::softhsm::token(TOKENS, label)
}

fn setup() -> Option<&'static std::path::Path> {
    common::softhsm::setup(TOKENS)
}

fn label(l: &str) -> KeySelector {
    KeySelector::Label(l.into())
}

fn verify(key: &dyn VaultKey, alg: SignAlg, msg: &[u8], sig: &[u8]) {
    PublicKey::from_spki(&key.info().spki_der).unwrap().verify(alg, msg, sig).unwrap_or_else(|e| panic!("{alg}: {e}"));
}

#[test]
fn rsa_2048_signs_with_every_rsa_algorithm() {
    let Some(t) = token("rsa-sign") else { return };
    let info = t.generate("srv", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default()).unwrap();
    assert_eq!(info.algorithm, KeyAlgorithm::Rsa { bits: 2048 });
    assert_eq!(info.id.len(), 16);
    assert!(info.made_inside && info.non_exportable);
    let key = t.key(&label("srv")).unwrap();
    assert_eq!(key.info(), &info);
    let msg = b"OpenSecureChannel request".repeat(40);
    for alg in SignAlg::ALL {
        if alg.is_ecdsa() {
            let err = key.sign(alg, &msg).unwrap_err();
            assert!(matches!(err, VaultError::Unsupported { .. }), "{alg}: {err}");
            continue;
        }
        let sig = key.sign(alg, &msg).unwrap();
        assert_eq!(sig.len(), 256);
        verify(key.as_ref(), alg, &msg, &sig);
        // Signatures are over the message, not something else.
        assert!(PublicKey::from_spki(&info.spki_der).unwrap().verify(alg, b"other", &sig).is_err());
    }
    // ECDSA-only operations and bad sizes are refused up front.
    let err = t.generate("bad", KeyAlgorithm::Rsa { bits: 1024 }, KeyPolicy::default()).unwrap_err();
    assert!(matches!(err, VaultError::InvalidInput(_)), "{err}");
}

#[test]
fn ec_keys_sign_ecdsa_and_refuse_rsa_algorithms() {
    let Some(t) = token("ec-sign") else { return };
    for (name, alg, sign_alg) in [
        ("p256", KeyAlgorithm::EcP256, SignAlg::EcdsaP256Sha256),
        ("p384", KeyAlgorithm::EcP384, SignAlg::EcdsaP384Sha384),
    ] {
        let info = t.generate(name, alg, KeyPolicy::default()).unwrap();
        assert_eq!(info.algorithm, alg);
        let key = t.key(&label(name)).unwrap();
        let sig = key.sign(sign_alg, b"hello").unwrap();
        assert_eq!(sig.len(), alg.signature_len());
        verify(key.as_ref(), sign_alg, b"hello", &sig);
        // DER form for X.509/TLS.
        let der = key.sign_der(sign_alg, b"hello").unwrap();
        assert_eq!(der[0], 0x30);
        for other in SignAlg::ALL.into_iter().filter(|a| *a != sign_alg) {
            let err = key.sign(other, b"hello").unwrap_err();
            assert!(matches!(err, VaultError::Unsupported { .. }), "{other}: {err}");
        }
        let err = key.decrypt(DecryptAlg::RsaOaepSha1, &[0u8; 64]).unwrap_err();
        assert!(matches!(err, VaultError::Unsupported { .. }), "{err}");
    }
}

#[test]
fn rsa_decrypts_oaep_and_pkcs1_by_policy() {
    let Some(t) = token("decrypt") else { return };
    t.generate("dec", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default()).unwrap();
    let key = t.open_key(&label("dec")).unwrap();
    let public = PublicKey::from_spki(&key.info().spki_der).unwrap();
    for alg in [DecryptAlg::RsaOaepSha1, DecryptAlg::RsaOaepSha256] {
        for len in [0, 1, 32, alg.max_plaintext(256)] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let ct = public.encrypt(alg, &msg).unwrap();
            assert_eq!(key.decrypt(alg, &ct).unwrap().as_slice(), msg.as_slice(), "{alg} {len}");
        }
    }
    // SoftHSM2 2.6 refuses native OAEP-SHA256, so the fallback (raw RSA + software decoding) did the work.
    if !key.oaep_sha256_uses_fallback() {
        eprintln!("note: this SoftHSM2 decrypts OAEP-SHA256 natively; the fallback path was not exercised here");
    }
    // PKCS#1 v1.5 decryption is off by default...
    let ct = public.encrypt(DecryptAlg::RsaPkcs1v15, b"legacy").unwrap();
    let err = key.decrypt(DecryptAlg::RsaPkcs1v15, &ct).unwrap_err();
    assert!(matches!(err, VaultError::Unsupported { .. }), "{err}");
    // ...and works once the key's policy allows it.
    let allow = KeyPolicy { allow_pkcs1v15_decrypt: true, ..Default::default() };
    t.set_policy(&label("dec"), &allow).unwrap();
    let key2 = t.open_key(&label("dec")).unwrap();
    assert_eq!(key2.info().policy, allow);
    assert_eq!(key2.decrypt(DecryptAlg::RsaPkcs1v15, &ct).unwrap().as_slice(), b"legacy");
    // A key generated with the policy carries it too.
    let info = t.generate("dec-legacy", KeyAlgorithm::Rsa { bits: 2048 }, allow.clone()).unwrap();
    assert_eq!(info.policy, allow);
    assert_eq!(t.list().unwrap().iter().find(|k| k.label == "dec-legacy").unwrap().policy, allow);
    // Wrong length is refused before the token sees it.
    let err = key.decrypt(DecryptAlg::RsaOaepSha1, &[1u8; 100]).unwrap_err();
    assert!(matches!(err, VaultError::InvalidInput(_)), "{err}");
}

#[test]
fn tampered_ciphertext_fails_and_the_key_keeps_working() {
    let Some(t) = token("tamper") else { return };
    t.generate("k", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy { allow_pkcs1v15_decrypt: true, ..Default::default() })
        .unwrap();
    let key = t.open_key(&label("k")).unwrap();
    let public = PublicKey::from_spki(&key.info().spki_der).unwrap();
    for alg in [DecryptAlg::RsaOaepSha1, DecryptAlg::RsaOaepSha256, DecryptAlg::RsaPkcs1v15] {
        let ct = public.encrypt(alg, b"session key material").unwrap();
        for pos in [0usize, 1, 100, 255] {
            let mut bad = ct.clone();
            bad[pos] ^= 0x40;
            match key.decrypt(alg, &bad) {
                Err(VaultError::DecryptFailed) => {}
                // Flipping the top byte may push the value above the modulus: the token says so as an error too.
                other => panic!("{alg} tampered at {pos}: {other:?}"),
            }
            // The next operation gets a healthy session.
            assert_eq!(key.decrypt(alg, &ct).unwrap().as_slice(), b"session key material");
            let sig = key.sign(SignAlg::RsaPssSha256, b"still alive").unwrap();
            verify(key.as_ref(), SignAlg::RsaPssSha256, b"still alive", &sig);
        }
        // A ciphertext of the other OAEP hash fails too.
        if alg == DecryptAlg::RsaOaepSha1 {
            assert!(matches!(key.decrypt(DecryptAlg::RsaOaepSha256, &ct), Err(VaultError::DecryptFailed)));
        }
    }
}

#[test]
fn selection_errors_and_duplicates() {
    let Some(t) = token("misc") else { return };
    let info = t.generate("one", KeyAlgorithm::EcP256, KeyPolicy::default()).unwrap();
    let err = t.key(&label("nope")).unwrap_err();
    assert!(matches!(err, VaultError::KeyNotFound(_)), "{err}");
    let err = t.key(&KeySelector::Id(vec![1, 2, 3])).unwrap_err();
    assert!(matches!(err, VaultError::KeyNotFound(_)), "{err}");
    assert_eq!(t.key(&KeySelector::Id(info.id.clone())).unwrap().info(), &info);
    let err = t.generate("one", KeyAlgorithm::EcP256, KeyPolicy::default()).unwrap_err();
    assert!(matches!(err, VaultError::DuplicateLabel(ref l) if l == "one"), "{err}");
    let err =
        t.import_pkcs8("one", soft::generate_pkcs8(KeyAlgorithm::EcP256).unwrap(), KeyPolicy::default()).unwrap_err();
    assert!(matches!(err, VaultError::DuplicateLabel(_)), "{err}");
    t.generate("two", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default()).unwrap();
    let mut labels: Vec<String> = t.list().unwrap().into_iter().map(|k| k.label).collect();
    labels.sort();
    assert_eq!(labels, ["one", "two"]);
    assert!(t.cert_chain(&label("one")).unwrap().is_empty());
    let err = t.cert_chain(&label("nope")).unwrap_err();
    assert!(matches!(err, VaultError::KeyNotFound(_)), "{err}");
}

#[test]
fn wrong_pin_is_reported() {
    if setup().is_none() {
        return;
    }
    // This token is never logged in by another test: a logged-in token accepts any PIN (CKR_USER_ALREADY_LOGGED_IN).
    let err = Pkcs11Token::open(Path::new(MODULE), "wrongpin", Some(b"654321")).unwrap_err();
    assert!(matches!(err, VaultError::WrongPin { .. }), "{err}");
    // Without a PIN the token opens, but its private keys are out of reach.
    let t = Pkcs11Token::open(Path::new(MODULE), "wrongpin", None).unwrap();
    assert!(t.list().unwrap().is_empty());
    let err = Pkcs11Token::open(Path::new(MODULE), "no-such-token", Some(PIN)).unwrap_err();
    assert!(matches!(err, VaultError::Pkcs11(_)), "{err}");
    t.login(PIN).unwrap();
}

#[test]
fn attributes_show_non_extractable_and_sensitive() {
    let Some(t) = token("attrs") else { return };
    let info = t.generate("k", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default()).unwrap();
    assert!(info.non_exportable);
    // Ask the token directly, outside our backend.
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
    let ctx = Pkcs11::new(MODULE).unwrap();
    // Already initialized by the backend in this process; that is fine, and we must not finalize.
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == "attrs")
        .unwrap();
    let s = ctx.open_ro_session(slot).unwrap();
    let keys = s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::Id(info.id.clone())]).unwrap();
    assert_eq!(keys.len(), 1);
    let attrs = s
        .get_attributes(
            keys[0],
            &[AttributeType::Extractable, AttributeType::Sensitive, AttributeType::Private, AttributeType::Token],
        )
        .unwrap();
    for a in
        [Attribute::Extractable(false), Attribute::Sensitive(true), Attribute::Private(true), Attribute::Token(true)]
    {
        assert!(attrs.contains(&a), "{a:?} missing from {attrs:?}");
    }
    let secret = s.get_attribute_info(keys[0], &[AttributeType::PrivateExponent, AttributeType::Prime1]).unwrap();
    assert!(secret.iter().all(|i| matches!(i, AttributeInfo::Sensitive)), "{secret:?}");
}

#[test]
fn certificate_chain_is_stored_and_replaced() {
    let Some(t) = token("certs") else { return };
    t.generate("leaf", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default()).unwrap();
    t.generate("ca", KeyAlgorithm::EcP256, KeyPolicy::default()).unwrap();
    let leaf_key = t.key(&label("leaf")).unwrap();
    let ca_key = t.key(&label("ca")).unwrap();
    let request = CsrRequest {
        common_name: "opcua-server".into(),
        application_uri: Some("urn:example:server".into()),
        dns_names: vec!["localhost".into()],
        ..Default::default()
    };
    // rcgen signs through the token.
    let leaf = csr::self_signed(leaf_key.as_ref(), &request, Duration::from_secs(3600)).unwrap();
    let ca = csr::self_signed_ca(ca_key.as_ref(), "Test CA", Duration::from_secs(3600)).unwrap();
    assert_eq!(PublicKey::from_certificate(&leaf).unwrap().spki_der(), leaf_key.info().spki_der.as_slice());
    // The CSR path works too.
    assert!(!t.create_csr(&label("leaf"), &request).unwrap().is_empty());

    t.store_cert_chain(&label("leaf"), vec![leaf.clone(), ca.clone()]).unwrap();
    assert_eq!(t.cert_chain(&label("leaf")).unwrap(), vec![leaf.clone(), ca.clone()]);
    // Replacing, not appending.
    t.store_cert_chain(&label("leaf"), vec![leaf.clone()]).unwrap();
    assert_eq!(t.cert_chain(&label("leaf")).unwrap(), vec![leaf.clone()]);
    // A chain whose leaf belongs to another key is refused and changes nothing.
    let err = t.store_cert_chain(&label("leaf"), vec![ca.clone()]).unwrap_err();
    assert!(matches!(err, VaultError::InvalidInput(_)), "{err}");
    let err = t.store_cert_chain(&label("leaf"), vec![]).unwrap_err();
    assert!(matches!(err, VaultError::InvalidInput(_)), "{err}");
    assert_eq!(t.cert_chain(&label("leaf")).unwrap(), vec![leaf]);
    t.store_cert_chain(&label("ca"), vec![ca.clone()]).unwrap();
    assert_eq!(t.cert_chain(&label("ca")).unwrap(), vec![ca]);
}

#[test]
fn import_pkcs8_keys() {
    let Some(t) = token("import") else { return };
    for (name, alg, sign_alg) in [
        ("rsa", KeyAlgorithm::Rsa { bits: 2048 }, SignAlg::RsaPkcs1Sha256),
        ("p256", KeyAlgorithm::EcP256, SignAlg::EcdsaP256Sha256),
        ("p384", KeyAlgorithm::EcP384, SignAlg::EcdsaP384Sha384),
    ] {
        let pkcs8 = soft::generate_pkcs8(alg).unwrap();
        let soft_key =
            soft::SoftKey::from_pkcs8(pkcs8.clone(), vec![], name.into(), true, KeyPolicy::default()).unwrap();
        let info = t.import_pkcs8(name, pkcs8, KeyPolicy::default()).unwrap();
        assert_eq!(info.spki_der, soft_key.info().spki_der, "{name}");
        assert_eq!(info.algorithm, alg);
        assert!(!info.made_inside);
        assert!(info.non_exportable);
        let key = t.key(&label(name)).unwrap();
        let sig = key.sign(sign_alg, b"imported").unwrap();
        verify(key.as_ref(), sign_alg, b"imported", &sig);
        if alg.is_rsa() {
            let ct = PublicKey::from_spki(&info.spki_der).unwrap().encrypt(DecryptAlg::RsaOaepSha256, b"x").unwrap();
            assert_eq!(key.decrypt(DecryptAlg::RsaOaepSha256, &ct).unwrap().as_slice(), b"x");
        }
    }
    let err = t
        .import_pkcs8("junk", zeroize::Zeroizing::new(vec![0x30, 0x03, 0x02, 0x01, 0x00]), KeyPolicy::default())
        .unwrap_err();
    assert!(matches!(err, VaultError::InvalidInput(_)), "{err}");
}

#[test]
fn uri_opens_a_key() {
    let Some(t) = token("uri") else { return };
    let info = t.generate("opcua-server", KeyAlgorithm::EcP256, KeyPolicy::default()).unwrap();
    let uri: Pkcs11Uri =
        format!("pkcs11:token=uri;object=opcua-server?module-path={MODULE}&pin-value=123456").parse().unwrap();
    let key = Pkcs11Key::open_uri(&uri).unwrap();
    assert_eq!(key.info(), &info);
    assert_eq!(key.token_label(), "uri");
    let sig = key.sign(SignAlg::EcdsaP256Sha256, b"m").unwrap();
    verify(key.as_ref(), SignAlg::EcdsaP256Sha256, b"m", &sig);

    // By id, PIN from a file.
    let dir = tempfile::tempdir().unwrap();
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, b"123456\n").unwrap();
    let mut by_id = Pkcs11Uri {
        token: Some("uri".into()),
        id: Some(info.id.clone()),
        module_path: Some(MODULE.into()),
        pin: Some(certvault::uri::PinSource::File(pin_file)),
        ..Default::default()
    };
    let parsed: Pkcs11Uri = by_id.to_string().parse().unwrap();
    assert_eq!(Pkcs11Key::open_uri(&parsed).unwrap().info(), &info);
    // id and object must agree.
    by_id.object = Some("other".into());
    assert!(matches!(Pkcs11Key::open_uri(&by_id), Err(VaultError::KeyNotFound(_))));
    // No key named: refused, never "the first key".
    let none: Pkcs11Uri = format!("pkcs11:token=uri?module-path={MODULE}&pin-value=123456").parse().unwrap();
    assert!(matches!(Pkcs11Key::open_uri(&none), Err(VaultError::BadUri { .. })));
    let missing: Pkcs11Uri =
        format!("pkcs11:token=uri;object=missing?module-path={MODULE}&pin-value=123456").parse().unwrap();
    assert!(matches!(Pkcs11Key::open_uri(&missing), Err(VaultError::KeyNotFound(_))));
    // An open token refuses a URI naming another token.
    let other: Pkcs11Uri = "pkcs11:token=elsewhere;object=opcua-server".parse().unwrap();
    assert!(matches!(t.key_by_uri(&other), Err(VaultError::BadUri { .. })));
    // Unknown path attributes make a URI match nothing (RFC 7512).
    let vendor: Pkcs11Uri =
        format!("pkcs11:token=uri;object=opcua-server;x-vendor=1?module-path={MODULE}&pin-value=123456")
            .parse()
            .unwrap();
    assert!(matches!(Pkcs11Key::open_uri(&vendor), Err(VaultError::BadUri { .. })));
}

#[test]
fn concurrent_signing_from_8_threads() {
    let Some(t) = token("concurrent") else { return };
    t.generate("rsa", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default()).unwrap();
    t.generate("ec", KeyAlgorithm::EcP256, KeyPolicy::default()).unwrap();
    let rsa: Arc<dyn VaultKey> = t.key(&label("rsa")).unwrap();
    let ec: Arc<dyn VaultKey> = t.key(&label("ec")).unwrap();
    drop(t); // The keys keep the token open and logged in.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (rsa, ec) = (Arc::clone(&rsa), Arc::clone(&ec));
            std::thread::spawn(move || {
                for j in 0..20 {
                    let msg = format!("thread {i} message {j}");
                    let (key, alg) =
                        if j % 2 == 0 { (&rsa, SignAlg::RsaPssSha256) } else { (&ec, SignAlg::EcdsaP256Sha256) };
                    let sig = key.sign(alg, msg.as_bytes()).unwrap();
                    verify(key.as_ref(), alg, msg.as_bytes(), &sig);
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
}

#[test]
fn software_fallbacks_work_when_mechanisms_are_missing() {
    use cryptoki::mechanism::MechanismType as M;
    let Some(t) = token("fallback") else { return };
    t.generate("k", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy { allow_pkcs1v15_decrypt: true, ..Default::default() })
        .unwrap();
    // Like many smartcards: raw RSA and PKCS#1/PSS over a digest, but no hash-and-sign mechanisms and no OAEP.
    t.disable_mechanisms(&[
        M::SHA1_RSA_PKCS,
        M::SHA256_RSA_PKCS,
        M::SHA384_RSA_PKCS,
        M::SHA512_RSA_PKCS,
        M::SHA1_RSA_PKCS_PSS,
        M::SHA256_RSA_PKCS_PSS,
        M::SHA384_RSA_PKCS_PSS,
        M::SHA512_RSA_PKCS_PSS,
        M::RSA_PKCS_OAEP,
    ]);
    assert!(!t.has_mechanism(M::SHA256_RSA_PKCS));
    let key = t.open_key(&label("k")).unwrap();
    for alg in SignAlg::ALL.into_iter().filter(|a| !a.is_ecdsa()) {
        let sig = key.sign(alg, b"fallback").unwrap();
        verify(key.as_ref(), alg, b"fallback", &sig);
    }
    let public = PublicKey::from_spki(&key.info().spki_der).unwrap();
    for alg in [DecryptAlg::RsaOaepSha1, DecryptAlg::RsaOaepSha256] {
        let ct = public.encrypt(alg, b"via raw RSA").unwrap();
        assert_eq!(key.decrypt(alg, &ct).unwrap().as_slice(), b"via raw RSA");
    }
    // PKCS#1 v1.5 decryption through raw RSA and the constant-time decoder.
    t.disable_mechanisms(&[M::RSA_PKCS]);
    let ct = public.encrypt(DecryptAlg::RsaPkcs1v15, b"legacy").unwrap();
    assert_eq!(key.decrypt(DecryptAlg::RsaPkcs1v15, &ct).unwrap().as_slice(), b"legacy");
    let mut bad = ct.clone();
    bad[10] ^= 1;
    assert!(matches!(key.decrypt(DecryptAlg::RsaPkcs1v15, &bad), Err(VaultError::DecryptFailed)));
    // Without PKCS#1 v1.5 signing mechanisms at all, the refusal is clear.
    let err = key.sign(SignAlg::RsaPkcs1Sha256, b"x").unwrap_err();
    assert!(matches!(err, VaultError::Unsupported { .. }), "{err}");
    // And without raw RSA, there is nothing left for OAEP.
    t.disable_mechanisms(&[M::RSA_X_509]);
    let ct = public.encrypt(DecryptAlg::RsaOaepSha256, b"x").unwrap();
    assert!(matches!(key.decrypt(DecryptAlg::RsaOaepSha256, &ct), Err(VaultError::Unsupported { .. })));
}
