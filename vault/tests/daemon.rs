//! vaultd as a real process: every operation over the socket, and every kind of bad input the issue names.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use certvault::container::{Container, PinRole};
use certvault::csr::CsrRequest;
use certvault::protocol::{self, Op, Request, Response};
use certvault::{
    DaemonClient, DecryptAlg, KeyAlgorithm, KeyPolicy, KeySelector, KeyStore, PublicKey, SignAlg, VaultError,
};
use common::vaultd::{spawn, Vaultd, ADMIN_PIN, PIN};

fn label(l: &str) -> KeySelector {
    KeySelector::Label(l.into())
}

#[test]
fn every_algorithm_signs_and_decrypts_through_the_daemon() {
    let v = Vaultd::start("CV-ALGS");
    let c = v.client();
    let rsa = c.generate("rsa", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default()).unwrap();
    let rsa3k = c.generate("rsa3k", KeyAlgorithm::Rsa { bits: 3072 }, KeyPolicy::default()).unwrap();
    let p256 = c.generate("p256", KeyAlgorithm::EcP256, KeyPolicy::default()).unwrap();
    let p384 = c.generate("p384", KeyAlgorithm::EcP384, KeyPolicy::default()).unwrap();
    assert!(rsa.made_inside && rsa.non_exportable);
    assert_eq!(c.list().unwrap().len(), 4);

    for info in [&rsa, &rsa3k, &p256, &p384] {
        let key = c.key(&KeySelector::Id(info.id.clone())).unwrap();
        let public = PublicKey::from_spki(&info.spki_der).unwrap();
        for alg in SignAlg::ALL.into_iter().filter(|a| a.fits(info.algorithm)) {
            let sig = key.sign(alg, b"message").unwrap();
            public.verify(alg, b"message", &sig).unwrap_or_else(|e| panic!("{alg} on {}: {e}", info.label));
            assert!(public.verify(alg, b"other message", &sig).is_err());
            if alg.is_ecdsa() {
                let der = key.sign_der(alg, b"message").unwrap();
                let raw = certvault::sig::ecdsa_der_to_raw(&der, info.algorithm.signature_len() / 2).unwrap();
                public.verify(alg, b"message", &raw).unwrap();
            }
        }
    }

    let key = c.key(&label("rsa")).unwrap();
    let public = PublicKey::from_spki(&rsa.spki_der).unwrap();
    for alg in [DecryptAlg::RsaOaepSha1, DecryptAlg::RsaOaepSha256] {
        let ct = public.encrypt(alg, b"a secret nonce").unwrap();
        assert_eq!(key.decrypt(alg, &ct).unwrap().as_slice(), b"a secret nonce");
        let mut bad = ct.clone();
        bad[10] ^= 1;
        assert!(matches!(key.decrypt(alg, &bad), Err(VaultError::DecryptFailed)));
    }
    // PKCS#1 v1.5 decryption is off unless the key's policy enables it.
    let ct = public.encrypt(DecryptAlg::RsaPkcs1v15, b"legacy").unwrap();
    assert!(matches!(key.decrypt(DecryptAlg::RsaPkcs1v15, &ct), Err(VaultError::Unsupported { .. })));
    let legacy = c
        .generate(
            "legacy",
            KeyAlgorithm::Rsa { bits: 2048 },
            KeyPolicy { allow_pkcs1v15_decrypt: true, ..Default::default() },
        )
        .unwrap();
    let ct = PublicKey::from_spki(&legacy.spki_der).unwrap().encrypt(DecryptAlg::RsaPkcs1v15, b"legacy").unwrap();
    assert_eq!(c.key(&label("legacy")).unwrap().decrypt(DecryptAlg::RsaPkcs1v15, &ct).unwrap().as_slice(), b"legacy");
}

#[test]
fn wrong_algorithm_unknown_label_and_bad_ciphertext_are_refused_and_the_daemon_serves_on() {
    let v = Vaultd::start("CV-BAD");
    let c = v.client();
    c.generate("ec", KeyAlgorithm::EcP256, KeyPolicy::default()).unwrap();
    let rsa = c.generate("rsa", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default()).unwrap();
    let ec = c.key(&label("ec")).unwrap();
    // The client checks first; ask the daemon directly too, so its own check is tested.
    assert!(matches!(ec.sign(SignAlg::RsaPssSha256, b"x"), Err(VaultError::Unsupported { .. })));
    let raw = raw_call(
        &v,
        Op::Sign {
            container: None,
            key: label("ec"),
            alg: SignAlg::RsaPkcs1Sha256,
            msg: serde_bytes::ByteBuf::from(b"x".to_vec()),
        },
    );
    assert!(matches!(raw, Response::Error { code: protocol::ErrorCode::NotLoggedIn, .. }), "{raw:?}");
    assert!(matches!(c.key(&label("nope")), Err(VaultError::KeyNotFound(_))));
    assert!(matches!(ec.decrypt(DecryptAlg::RsaOaepSha1, &[0u8; 256]), Err(VaultError::Unsupported { .. })));
    let rsa_key = c.key(&label("rsa")).unwrap();
    assert!(matches!(rsa_key.decrypt(DecryptAlg::RsaOaepSha1, &[0u8; 10]), Err(VaultError::InvalidInput(_))));
    assert!(matches!(
        c.generate("rsa", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default()),
        Err(VaultError::DuplicateLabel(_))
    ));
    assert!(c.generate("small", KeyAlgorithm::Rsa { bits: 1024 }, KeyPolicy::default()).is_err());
    // After all that the key still signs.
    let sig = rsa_key.sign(SignAlg::RsaPkcs1Sha256, b"still here").unwrap();
    PublicKey::from_spki(&rsa.spki_der).unwrap().verify(SignAlg::RsaPkcs1Sha256, b"still here", &sig).unwrap();
}

/// Sends one request on a fresh, not logged-in connection.
fn raw_call(v: &Vaultd, op: Op) -> Response {
    let mut s = UnixStream::connect(&v.socket).unwrap();
    protocol::write_frame(&mut s, &Request { v: protocol::PROTOCOL_VERSION, op }).unwrap();
    let bytes = protocol::read_frame_bytes(&mut s).unwrap().unwrap();
    protocol::decode(&bytes).unwrap()
}

#[test]
fn garbage_oversized_frames_and_unknown_versions_close_only_that_connection() {
    let v = Vaultd::start("CV-GARBAGE");
    let c = v.client();
    let info = c.generate("k", KeyAlgorithm::EcP256, KeyPolicy::default()).unwrap();
    let key = c.key(&label("k")).unwrap();

    // Valid frame, garbage CBOR: an error answer, and the connection stays usable.
    let mut s = UnixStream::connect(&v.socket).unwrap();
    s.write_all(&[0, 0, 0, 5, 0xff, 0xfe, 0x00, 0x13, 0x99]).unwrap();
    let r: Response = protocol::decode(&protocol::read_frame_bytes(&mut s).unwrap().unwrap()).unwrap();
    assert!(matches!(r, Response::Error { .. }), "{r:?}");
    protocol::write_frame(&mut s, &Request { v: 1, op: Op::Hello }).unwrap();
    let r: Response = protocol::decode(&protocol::read_frame_bytes(&mut s).unwrap().unwrap()).unwrap();
    assert!(matches!(r, Response::Hello { .. }));

    // Oversized frame: an error, then the daemon closes that connection.
    let mut s = UnixStream::connect(&v.socket).unwrap();
    s.write_all(&(64u32 << 20).to_be_bytes()).unwrap();
    let r: Response = protocol::decode(&protocol::read_frame_bytes(&mut s).unwrap().unwrap()).unwrap();
    assert!(matches!(r, Response::Error { .. }));
    let mut rest = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(s.read_to_end(&mut rest).unwrap(), 0, "connection closed");

    // A frame cut short by a client that goes away.
    let mut s = UnixStream::connect(&v.socket).unwrap();
    s.write_all(&[0, 0, 1, 0, 1, 2, 3]).unwrap();
    drop(s);

    // A protocol version from the future.
    let r = raw_call(&v, Op::Hello);
    assert!(matches!(r, Response::Hello { .. }));
    let mut s = UnixStream::connect(&v.socket).unwrap();
    protocol::write_frame(&mut s, &Request { v: 99, op: Op::Hello }).unwrap();
    let r: Response = protocol::decode(&protocol::read_frame_bytes(&mut s).unwrap().unwrap()).unwrap();
    match r {
        Response::Error { code, message, .. } => {
            assert_eq!(code, protocol::ErrorCode::Version);
            assert!(message.contains("99"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    // The original client never noticed.
    let sig = key.sign(SignAlg::EcdsaP256Sha256, b"after the garbage").unwrap();
    PublicKey::from_spki(&info.spki_der).unwrap().verify(SignAlg::EcdsaP256Sha256, b"after the garbage", &sig).unwrap();
}

#[test]
fn wrong_pins_lock_the_container_across_a_restart_and_the_admin_pin_unlocks() {
    let mut v = Vaultd::start("CV-PIN");
    let c = DaemonClient::connect(&v.socket, None).unwrap();
    assert!(matches!(c.login(b"0000"), Err(VaultError::WrongPin { attempts_left: 2 })));
    assert!(matches!(c.login(b"0001"), Err(VaultError::WrongPin { attempts_left: 1 })));
    v.restart().unwrap();
    let c = DaemonClient::connect(&v.socket, None).unwrap();
    assert_eq!(c.status().unwrap().attempts_left, 1, "the counter survived the restart");
    assert!(matches!(c.login(b"0002"), Err(VaultError::PinLocked)));
    // Locked: even the right PIN is refused now, also after another restart.
    assert!(matches!(c.login(PIN), Err(VaultError::PinLocked)));
    v.restart().unwrap();
    let c = DaemonClient::connect(&v.socket, None).unwrap();
    assert!(matches!(c.login(PIN), Err(VaultError::PinLocked)));
    assert!(c.status().unwrap().locked);
    let msg = VaultError::PinLocked.to_string();
    assert!(msg.contains("certvault unlock"), "the error names the fix: {msg}");

    assert!(matches!(c.unlock(b"wrong-admin", b"654321"), Err(VaultError::AccessDenied(_))));
    c.unlock(ADMIN_PIN, b"654321").unwrap();
    c.login(b"654321").unwrap();
    assert!(!c.status().unwrap().locked);
    c.change_pin(b"654321", b"777777").unwrap();
    let c2 = DaemonClient::connect(&v.socket, None).unwrap();
    assert!(matches!(c2.login(b"654321"), Err(VaultError::WrongPin { .. })));
    c2.login(b"777777").unwrap();
    // Operations need a login.
    let c3 = DaemonClient::connect(&v.socket, None).unwrap();
    assert!(matches!(c3.list(), Err(VaultError::NotLoggedIn)));
}

#[test]
fn corrupted_truncated_and_future_containers_are_refused_with_a_clear_error() {
    let v = Vaultd::start("CV-CORRUPT");
    v.client().generate("k", KeyAlgorithm::EcP256, KeyPolicy::default()).unwrap();
    let mut v = v;
    v.kill();
    let good = std::fs::read(&v.container).unwrap();
    let socket = v.dir.path().join("other.sock");

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated body", good[..good.len() - 20].to_vec(), "does not authenticate"),
        ("truncated header", good[..good.len() / 2].to_vec(), "truncated header"),
        ("empty", Vec::new(), "bad magic"),
        ("garbage", b"this is not a container at all".to_vec(), "bad magic"),
        (
            "future",
            {
                let mut b = good.clone();
                b[8..10].copy_from_slice(&7u16.to_be_bytes());
                b
            },
            "version 7",
        ),
    ];
    for (name, bytes, expect) in cases {
        std::fs::write(&v.container, &bytes).unwrap();
        // The daemon starts (it needs no PIN to start), but a login reports the damage.
        match spawn(&v.container, &socket) {
            Err(e) => assert!(e.contains(expect), "{name}: {e}"),
            Ok(mut child) => {
                let c = DaemonClient::connect(&socket, None).unwrap();
                let err = c.login(PIN).unwrap_err().to_string();
                assert!(err.contains(expect), "{name}: {err}");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
    // The original bytes still open: nothing was overwritten by the failed attempts.
    std::fs::write(&v.container, &good).unwrap();
    v.restart().unwrap();
    assert_eq!(v.client().list().unwrap().len(), 1);
}

#[test]
fn a_second_daemon_on_the_same_container_is_refused() {
    let v = Vaultd::start("CV-TWICE");
    let err = spawn(&v.container, &v.dir.path().join("second.sock")).unwrap_err();
    assert!(err.contains("in use by another vaultd"), "{err}");
    let err = spawn(&v.dir.path().join("missing.cvault"), &v.dir.path().join("third.sock")).unwrap_err();
    assert!(err.contains("missing.cvault"), "{err}");
    // The first one is unaffected.
    v.client().generate("k", KeyAlgorithm::EcP256, KeyPolicy::default()).unwrap();
}

#[test]
fn killing_the_daemon_mid_write_never_leaves_a_broken_container() {
    let mut v = Vaultd::start("CV-KILL");
    let mut confirmed = 0usize;
    for round in 0..8u64 {
        let c = v.client();
        let socket = v.socket.clone();
        let writer = std::thread::spawn(move || {
            let c = DaemonClient::connect(&socket, None).unwrap();
            let mut done = 0usize;
            if c.login(PIN).is_err() {
                return done;
            }
            for i in 0.. {
                let label = format!("r{round}-k{i}");
                if c.generate(&label, KeyAlgorithm::EcP256, KeyPolicy::default()).is_err() {
                    break;
                }
                done += 1;
            }
            done
        });
        std::thread::sleep(Duration::from_millis(20 + round * 17));
        v.kill();
        let done = writer.join().unwrap();
        drop(c);
        // Whatever the moment, the file opens, and every key the daemon confirmed is in it.
        let opened = Container::open(&v.container, PIN, PinRole::User).unwrap().expect("PIN still opens it");
        assert!(opened.body.keys.len() >= confirmed + done, "round {round}: lost confirmed keys");
        confirmed = opened.body.keys.len();
        v.restart().unwrap();
    }
    assert!(confirmed > 0, "the test wrote something");
    let c = v.client();
    assert_eq!(c.list().unwrap().len(), confirmed);
    // The audit log survived the kills too.
    let report = certvault::audit::verify(&certvault::container::sidecar(&v.container, "audit"), "CV-KILL").unwrap();
    assert!(report.records as usize >= confirmed);
}

#[test]
fn chains_csrs_and_imported_keys() {
    let v = Vaultd::start("CV-CERTS");
    let c = v.client();
    let info = c.generate("srv", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default()).unwrap();
    let key = c.key(&label("srv")).unwrap();
    let req = CsrRequest {
        common_name: "Machine A".into(),
        application_uri: Some("urn:certvault:machine-a".into()),
        dns_names: vec!["localhost".into()],
        ..Default::default()
    };
    let cert = certvault::csr::self_signed(key.as_ref(), &req, Duration::from_secs(3600)).unwrap();
    c.store_cert_chain(&label("srv"), vec![cert.clone()]).unwrap();
    assert_eq!(c.cert_chain(&label("srv")).unwrap(), vec![cert.clone()]);

    // A chain whose leaf carries another key is refused, and the stored chain is unchanged.
    c.generate("other", KeyAlgorithm::EcP256, KeyPolicy::default()).unwrap();
    assert!(matches!(c.store_cert_chain(&label("other"), vec![cert.clone()]), Err(VaultError::InvalidInput(_))));
    assert!(c.store_cert_chain(&label("srv"), vec![b"not a certificate".to_vec()]).is_err());
    assert_eq!(c.cert_chain(&label("srv")).unwrap(), vec![cert]);

    // The CSR is made inside the daemon and carries the key's public half and a valid signature.
    let csr = c.create_csr(&label("srv"), &req).unwrap();
    let parsed = rcgen::CertificateSigningRequestParams::from_der(&csr.clone().into()).expect("CSR signature verifies");
    assert_eq!(
        rcgen::PublicKeyData::der_bytes(&parsed.public_key),
        PublicKey::from_spki(&info.spki_der).unwrap().raw_bytes()
    );

    // Import: the key then lives only in the container and signs there.
    let pkcs8 = certvault::soft::generate_pkcs8(KeyAlgorithm::EcP384).unwrap();
    let imported = c.import_pkcs8("imported", pkcs8, KeyPolicy::default()).unwrap();
    assert!(!imported.made_inside);
    let sig = c.key(&label("imported")).unwrap().sign(SignAlg::EcdsaP384Sha384, b"m").unwrap();
    PublicKey::from_spki(&imported.spki_der).unwrap().verify(SignAlg::EcdsaP384Sha384, b"m", &sig).unwrap();
    assert!(c.import_pkcs8("junk", zeroize::Zeroizing::new(vec![1, 2, 3]), KeyPolicy::default()).is_err());
}

#[test]
fn per_key_uids_are_enforced() {
    let v = Vaultd::start("CV-UID");
    let c = v.client();
    let me = rustix::process::getuid().as_raw();
    c.generate("mine", KeyAlgorithm::EcP256, KeyPolicy { allowed_uids: vec![me], ..Default::default() }).unwrap();
    c.generate("theirs", KeyAlgorithm::EcP256, KeyPolicy { allowed_uids: vec![me + 4242], ..Default::default() })
        .unwrap();
    c.key(&label("mine")).unwrap().sign(SignAlg::EcdsaP256Sha256, b"m").unwrap();
    assert!(matches!(c.key(&label("theirs")), Err(VaultError::AccessDenied(_))));
    let records = c.audit(1, 1000).unwrap();
    assert!(records.iter().any(|r| r.op == "sign" && r.key.as_deref() == Some("mine") && r.uid == Some(me)));
}

#[test]
fn a_slow_operation_does_not_hold_up_other_clients() {
    let v = Vaultd::start("CV-SLOW");
    let c = v.client();
    c.generate("fast", KeyAlgorithm::EcP256, KeyPolicy::default()).unwrap();
    let fast = c.key(&label("fast")).unwrap();
    let socket = v.socket.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let slow = std::thread::spawn(move || {
        let c = DaemonClient::connect(&socket, None).unwrap();
        c.login(PIN).unwrap();
        // RSA-4096 generation takes a second or more here.
        let r = c.generate("slow", KeyAlgorithm::Rsa { bits: 4096 }, KeyPolicy::default());
        tx.send(()).unwrap();
        r
    });
    std::thread::sleep(Duration::from_millis(50));
    let mut signed_while_generating = 0;
    for _ in 0..20 {
        fast.sign(SignAlg::EcdsaP256Sha256, b"m").unwrap();
        if rx.try_recv().is_err() {
            signed_while_generating += 1;
        }
    }
    slow.join().unwrap().unwrap();
    assert!(signed_while_generating > 0, "signing waited for a key generation on another connection");
}

#[test]
fn every_key_use_is_in_the_audit_log_and_the_chain_verifies() {
    let v = Vaultd::start("CV-AUDIT");
    let c = v.client();
    c.generate("k", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default()).unwrap();
    let key = c.key(&label("k")).unwrap();
    for _ in 0..7 {
        key.sign(SignAlg::RsaPssSha256, b"m").unwrap();
    }
    let ct = PublicKey::from_spki(&key.info().spki_der).unwrap().encrypt(DecryptAlg::RsaOaepSha1, b"n").unwrap();
    key.decrypt(DecryptAlg::RsaOaepSha1, &ct).unwrap();
    let _ = key.decrypt(DecryptAlg::RsaOaepSha1, &[7u8; 256]);
    let records = c.audit(1, 1000).unwrap();
    let count = |op: &str, ok: bool| records.iter().filter(|r| r.op == op && r.ok == ok).count();
    assert_eq!(count("sign", true), 7);
    assert_eq!(count("decrypt", true), 1);
    assert_eq!(count("decrypt", false), 1);
    assert_eq!(count("generate", true), 1);
    let log = certvault::container::sidecar(&v.container, "audit");
    assert_eq!(certvault::audit::verify(&log, "CV-AUDIT").unwrap().records as usize, records.len());
}

#[test]
fn keys_open_from_vaultd_uris() {
    let v = Vaultd::start("CV-URI");
    let info = v.client().generate("opcua-server", KeyAlgorithm::EcP256, KeyPolicy::default()).unwrap();
    let pin_file = v.dir.path().join("pin");
    std::fs::write(&pin_file, b"123456\n").unwrap();
    let uri = format!(
        "vaultd:serial=CV-URI;object=opcua-server?socket={}&pin-source=file:{}",
        v.socket.display(),
        pin_file.display()
    );
    let key = certvault::store::open_key(&uri.parse().unwrap()).unwrap();
    assert_eq!(key.info().spki_der, info.spki_der);
    let sig = key.sign(SignAlg::EcdsaP256Sha256, b"m").unwrap();
    PublicKey::from_spki(&info.spki_der).unwrap().verify(SignAlg::EcdsaP256Sha256, b"m", &sig).unwrap();

    let no_key = format!("vaultd:serial=CV-URI?socket={}", v.socket.display());
    assert!(matches!(certvault::store::open_key(&no_key.parse().unwrap()), Err(VaultError::BadUri { .. })));
    let wrong = format!(
        "vaultd:serial=CV-URI;object=nope?socket={}&pin-source=file:{}",
        v.socket.display(),
        pin_file.display()
    );
    assert!(matches!(certvault::store::open_key(&wrong.parse().unwrap()), Err(VaultError::KeyNotFound(_))));
    let other_serial = format!(
        "vaultd:serial=CV-OTHER;object=opcua-server?socket={}&pin-source=file:{}",
        v.socket.display(),
        pin_file.display()
    );
    assert!(certvault::store::open_key(&other_serial.parse().unwrap()).is_err());
}
