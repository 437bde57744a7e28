//! End to end, device side of provisioning with real vaultd processes: one daemon plays the device's dongle, one
//! the central's vault (CA key, backup key, key maker). Every key is made at run time.

mod common;

use certvault::provision::device::{self, ItemSpec};
use certvault::provision::envelope::key_identifier;
use certvault::provision::{self, seal, verify_receipt, verify_request, KeyMaker, Update, UpdateItem};
use certvault::{
    DaemonClient, DecryptAlg, KeyAlgorithm, KeyPolicy, KeySelector, KeyStore, PublicKey, SignAlg, VaultError,
};
use common::central::Central;
use common::vaultd::{Vaultd, ADMIN_PIN};

fn items() -> Vec<ItemSpec> {
    vec![
        "label=opcua,alg=rsa-2048,uri=urn:machine-a,host=machine-a,origin=device".parse().unwrap(),
        "label=opcua-ecc,alg=p256,uri=urn:machine-a,host=machine-a,origin=central".parse().unwrap(),
    ]
}

fn device(serial: &str, central: &Central) -> (Vaultd, DaemonClient) {
    let v = Vaultd::start(serial);
    let c = v.client();
    let state = c.device_init().unwrap();
    assert!(state.device_key.is_some() && state.transport_key.is_some());
    c.trust_central(ADMIN_PIN, &central.ca_cert).unwrap();
    (v, c)
}

/// Applies `der`, expects a refusal containing `needle`, and checks the container file did not change.
fn refused(v: &Vaultd, c: &DaemonClient, der: &[u8], needle: &str) {
    let before = std::fs::read(&v.container).unwrap();
    let state = c.device_info().unwrap();
    let e = device::apply_update(c, der).expect_err("the update must be refused");
    assert!(e.to_string().contains(needle), "expected {needle:?} in: {e}");
    assert_eq!(std::fs::read(&v.container).unwrap(), before, "a refused update changed the container");
    assert_eq!(c.device_info().unwrap(), state);
}

#[test]
fn request_issue_apply_receipt_and_every_bad_update_changes_nothing() {
    let central = Central::start();
    let (mut v, _) = device("CV-DEV-1", &central);
    let c = v.client();
    let device_spki = c.device_info().unwrap().device_key.unwrap().spki_der;

    let req_der = device::make_request(&c, &items()).unwrap();
    let req = verify_request(&req_der).unwrap();
    assert_eq!(req.device_key, device_spki, "the central compares this with the entitled key");
    assert_eq!((req.serial.as_str(), req.counter), ("CV-DEV-1", 0));
    assert!(c.device_info().unwrap().pending_request);

    let (update, _) = central.answer(&req);
    let good = central.sign(&update);

    // The pending nonce and the pinned central survive a daemon restart.
    v.restart().unwrap();
    let c = v.client();

    // Tampered, truncated, for another dongle, with a skipped counter, signed by another central, a request file:
    // each refused with its own message, and the container file stays byte for byte the same.
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    refused(&v, &c, &flipped, "update");
    refused(&v, &c, &good[..good.len() - 1], "not a valid update file");
    let mut other = update.clone();
    other.serial = "CV-OTHER".into();
    refused(&v, &c, &central.sign(&other), "is for dongle \"CV-OTHER\"");
    let mut skipped = update.clone();
    skipped.counter += 1;
    refused(&v, &c, &central.sign(&skipped), "carries update counter 2, expected 1");
    let mut stale = update.clone();
    stale.nonce = vec![0u8; 32];
    refused(&v, &c, &central.sign(&stale), "nonce mismatch");
    let forger = Central::start();
    refused(&v, &c, &forger.sign(&update), "was not signed by the trusted central");
    refused(&v, &c, &req_der, "expected the update file, found content type 1.3.6.1.4.1.59142.1.1 (a request file)");

    // The real one applies: chains stored, the central-made key imported inside, counter advanced, receipt made.
    let (report, receipt) = device::apply_update(&c, &good).unwrap();
    assert_eq!(report.counter, 1);
    assert_eq!(report.imported_keys, vec!["opcua-ecc".to_string()]);
    let r = verify_receipt(&receipt, &device_spki).unwrap();
    assert_eq!((r.serial.as_str(), r.counter, r.nonce.as_slice()), ("CV-DEV-1", 1, req.nonce.as_slice()));
    for (item, thumb) in update.items.iter().zip(&r.certificates) {
        assert_eq!(thumb.sha256, provision::thumbprint(&item.chain[0]));
        let stored = c.cert_chain(&KeySelector::Label(item.label.clone())).unwrap();
        assert_eq!(stored, item.chain);
    }
    let state = c.device_info().unwrap();
    assert_eq!((state.counter, state.pending_request), (1, false));
    // The imported key works and matches its certificate.
    let ecc = c.key(&KeySelector::Label("opcua-ecc".into())).unwrap();
    let sig = ecc.sign(SignAlg::EcdsaP256Sha256, b"hello").unwrap();
    PublicKey::from_certificate(&update.items[1].chain[0])
        .unwrap()
        .verify(SignAlg::EcdsaP256Sha256, b"hello", &sig)
        .unwrap();

    // Replayed: there is no outstanding request any more.
    refused(&v, &c, &good, "nonce mismatch");
    // A new request supersedes; the old update is still refused (reordered / replayed).
    let req2 = verify_request(&device::make_request(&c, &items()[..1]).unwrap()).unwrap();
    assert_eq!(req2.counter, 1);
    refused(&v, &c, &good, "nonce mismatch");
    let (u2, _) = central.answer(&req2);
    let (report2, _) = device::apply_update(&c, &central.sign(&u2)).unwrap();
    assert_eq!(report2.counter, 2);
}

#[test]
fn a_backed_up_key_is_restored_to_a_replacement_dongle() {
    let central = Central::start();
    let (_v1, c1) = device("CV-OLD", &central);
    let req = verify_request(&device::make_request(&c1, &items()[1..]).unwrap()).unwrap();
    let (update, backups) = central.answer(&req);
    device::apply_update(&c1, &central.sign(&update)).unwrap();
    let original = c1.key(&KeySelector::Label("opcua-ecc".into())).unwrap().info().spki_der.clone();

    // The replacement dongle asks for the same item; the central re-seals its backup copy to the new transport key.
    let (_v2, c2) = device("CV-NEW", &central);
    let req2 = verify_request(&device::make_request(&c2, &items()[1..]).unwrap()).unwrap();
    let resealed =
        central.client.reseal(&KeySelector::Label("backup".into()), &backups[0], &req2.transport_key).unwrap();
    assert_eq!(seal::recipient(&resealed).unwrap(), key_identifier(&req2.transport_key));
    let restore = Update::new(
        req2.serial.clone(),
        req2.nonce.clone(),
        req2.counter,
        vec![UpdateItem {
            label: "opcua-ecc".into(),
            chain: update.items[0].chain.clone(),
            sealed_key: Some(resealed),
        }],
    );
    device::apply_update(&c2, &central.sign(&restore)).unwrap();
    let restored = c2.key(&KeySelector::Label("opcua-ecc".into())).unwrap().info().spki_der.clone();
    assert_eq!(restored, original);
    // A sealed key for one dongle does not open in another.
    let req3 = verify_request(&device::make_request(&c1, &items()[1..]).unwrap()).unwrap();
    let (mut u3, _) = central.answer(&req3);
    u3.items[0].sealed_key = Some(backups[0].clone());
    let e = device::apply_update(&c1, &central.sign(&u3)).unwrap_err();
    assert!(e.to_string().contains("sealed to another key"), "{e}");
}

#[test]
fn vault_owned_keys_stay_inside() {
    let central = Central::start();
    let (_v, c) = device("CV-DEV-3", &central);
    let transport = c.key(&KeySelector::Label(provision::TRANSPORT_KEY_LABEL.into())).unwrap();
    // The transport key returns no plaintext and makes no signatures.
    let block =
        PublicKey::from_spki(&transport.info().spki_der).unwrap().encrypt(DecryptAlg::RsaOaepSha256, &[7; 32]).unwrap();
    let e = transport.decrypt(DecryptAlg::RsaOaepSha256, &block).unwrap_err();
    assert!(e.to_string().contains("unwrap-only"), "{e}");
    assert!(transport.sign(SignAlg::RsaPssSha256, b"x").is_err());
    // Clients cannot make or import keys under the vault's own labels.
    let e = c.generate("certvault:transport", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default()).unwrap_err();
    assert!(e.to_string().contains("belong to the vault"), "{e}");
    // Pinning another central needs the admin PIN.
    let e = c.trust_central(b"wrong-admin", &central.ca_cert).unwrap_err();
    assert!(matches!(e, VaultError::AccessDenied(_)), "{e}");
    // Device init is idempotent: the identity stays.
    let before = c.device_info().unwrap();
    assert_eq!(c.device_init().unwrap().device_key, before.device_key);
    // Re-sealing needs an unwrap-only key.
    central.client.generate("plain", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default()).unwrap();
    let made =
        central.client.generate_sealed(KeyAlgorithm::EcP256, std::slice::from_ref(&central.backup_spki)).unwrap();
    let e = central
        .client
        .reseal(&KeySelector::Label("plain".into()), &made.sealed[0], &transport.info().spki_der)
        .unwrap_err();
    assert!(e.to_string().contains("not unwrap-only"), "{e}");
}

fn certvault(socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_certvault"))
        .args(args)
        .env("CERTVAULT_SOCKET", socket)
        .env("CERTVAULT_PIN", "123456")
        .env("CERTVAULT_ADMIN_PIN", std::str::from_utf8(ADMIN_PIN).unwrap())
        .env_remove("CERTVAULT_PKCS11")
        .env_remove("CERTVAULT_CONTAINER")
        .output()
        .expect("run certvault")
}

fn cli_ok(out: std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "certvault failed: {}{text}", String::from_utf8_lossy(&out.stderr));
    text
}

#[test]
fn operator_flow_through_the_cli() {
    let central = Central::start();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let socket = p("vaultd.sock");
    let container = p("dongle.cvault");
    let s = socket.as_path();
    let out = cli_ok(certvault(
        s,
        &["init", "--file", container.to_str().unwrap(), "--serial", "CV-CLI-9", "--kdf-memory-kib", "256"],
    ));
    assert!(out.contains("certvault:device"), "{out}");
    let _daemon = KillOnDrop(common::vaultd::spawn(&container, s).unwrap());

    let show = cli_ok(certvault(s, &["device", "show"]));
    assert!(show.contains("device key: certvault:device p256") && show.contains("trusted central: none"), "{show}");
    std::fs::write(p("central.der"), &central.ca_cert).unwrap();
    let out = certvault(s, &["device", "trust-central", "--cert", p("central.der").to_str().unwrap()]);
    assert!(cli_ok(out).contains("trusting the central certificate"));

    let req_file = p("request.p7");
    let out = certvault(
        s,
        &[
            "request",
            "--item",
            "label=opcua,alg=rsa-2048,uri=urn:machine-a,host=machine-a,origin=device",
            "--item",
            "label=opcua-ecc,alg=p256,uri=urn:machine-a,origin=central",
            "--out",
            req_file.to_str().unwrap(),
        ],
    );
    assert!(cli_ok(out).contains("2 item(s)"));
    let printed = std::process::Command::new("openssl")
        .args(["cms", "-cmsout", "-print", "-inform", "DER", "-in", req_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(printed.status.success() && String::from_utf8_lossy(&printed.stdout).contains("1.3.6.1.4.1.59142.1.1"));

    let req = verify_request(&std::fs::read(&req_file).unwrap()).unwrap();
    let (update, _) = central.answer(&req);
    std::fs::write(p("update.p7"), central.sign(&update)).unwrap();
    let (upd_path, rec_path) = (p("update.p7"), p("receipt.p7"));
    let args = ["apply", "--in", upd_path.to_str().unwrap(), "--receipt", rec_path.to_str().unwrap()];
    let out = cli_ok(certvault(s, &args));
    assert!(out.contains("stored opcua-ecc (key made by the central)") && out.contains("counter is now 1"), "{out}");
    let device_spki = req.device_key.clone();
    let receipt = verify_receipt(&std::fs::read(p("receipt.p7")).unwrap(), &device_spki).unwrap();
    assert_eq!(receipt.counter, 1);
    // Applying it again is refused, and says that nothing changed.
    let again = certvault(s, &args);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("nothing changed") && err.contains("nonce mismatch"), "{err}");
    // Bad item syntax names the fix.
    let bad = certvault(s, &["request", "--item", "label=x", "--out", p("x.p7").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("needs uri="), "{}", String::from_utf8_lossy(&bad.stderr));
}

/// Kills the daemon when the test ends, passed or failed.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
