//! The provisioning device on a real SoftHSM2 token: request and apply with the token as the vault. A central-made
//! key comes in through two `C_UnwrapKey` calls and ends up sensitive and non-extractable on the token.
//!
//! Without SoftHSM2 these skip with a message, unless `CERTVAULT_REQUIRE_SOFTHSM` is set, where they fail.

mod common;

use certvault::pkcs11::Pkcs11Token;
use certvault::provision::device::{self, ItemSpec};
use certvault::provision::{verify_receipt, verify_request, OaepHash, TRANSPORT_KEY_LABEL};
use certvault::{DecryptAlg, KeySelector, KeyStore, PublicKey, SignAlg};
use common::central::Central;

const TOKENS: &[&str] = &["prov-dev", "prov-rotate", "prov-cli", "prov-front", "prov-squat"];

fn items() -> Vec<ItemSpec> {
    vec![
        "label=opcua,alg=rsa2048,uri=urn:machine-a,host=machine-a,origin=device".parse().unwrap(),
        "label=opcua-ecc,alg=p256,uri=urn:machine-a,origin=central".parse().unwrap(),
        "label=opcua-rsa,alg=rsa2048,uri=urn:machine-a,origin=central".parse().unwrap(),
    ]
}

fn token(label: &str) -> Option<Pkcs11Token> {
    common::softhsm::token(TOKENS, label)
}

fn snapshot(t: &Pkcs11Token) -> (certvault::protocol::DeviceState, Vec<String>) {
    let mut keys: Vec<String> = t.list().unwrap().into_iter().map(|k| format!("{} {}", k.label, k.id_hex())).collect();
    keys.sort();
    (t.device_info().unwrap(), keys)
}

#[test]
fn a_token_requests_and_applies_with_keys_unwrapped_inside() {
    let Some(t) = token("prov-dev") else { return };
    let central = Central::start();
    let state = t.device_init().unwrap();
    assert!(state.device_key.is_some() && state.transport_key.is_some());
    t.trust_central(&central.ca_cert).unwrap();
    // The transport key unwraps only: no signatures, no decryption that would hand out a content key.
    let transport = t.key(&KeySelector::Label(TRANSPORT_KEY_LABEL.into())).unwrap();
    assert!(transport.sign(SignAlg::RsaPkcs1Sha256, b"x").is_err());
    let block =
        PublicKey::from_spki(&transport.info().spki_der).unwrap().encrypt(DecryptAlg::RsaOaepSha1, &[1; 32]).unwrap();
    assert!(transport.decrypt(DecryptAlg::RsaOaepSha1, &block).is_err());

    let req = verify_request(&device::make_request(&t, &items()).unwrap()).unwrap();
    // SoftHSM2 2.6 unwraps OAEP with SHA-1 only; the request says so and the central seals accordingly.
    assert_eq!(req.transport_oaep, OaepHash::Sha1);
    let (update, _) = central.answer(&req);
    let good = central.sign(&update);

    // Bad updates change nothing on the token.
    let before = snapshot(&t);
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n / 3] ^= 0x20;
    assert!(device::apply_update(&t, &flipped).is_err());
    let mut other = update.clone();
    other.serial = "SOMEONE-ELSE".into();
    let e = device::apply_update(&t, &central.sign(&other)).unwrap_err();
    assert!(e.to_string().contains("SOMEONE-ELSE"), "{e}");
    let mut wrong_key = update.clone();
    wrong_key.items.swap(1, 2); // each sealed key now arrives under the other's certificate
    let (a, b) = (wrong_key.items[1].chain.clone(), wrong_key.items[2].chain.clone());
    wrong_key.items[1].chain = b;
    wrong_key.items[2].chain = a;
    wrong_key.items[1].label = "opcua-ecc".into();
    wrong_key.items[2].label = "opcua-rsa".into();
    let e = device::apply_update(&t, &central.sign(&wrong_key)).unwrap_err();
    // The token itself refuses an RSA key unwrapped into an EC object, or our check finds the leaf does not fit.
    assert!(e.to_string().contains("update item \"opcua-"), "{e}");
    assert_eq!(snapshot(&t), before, "a refused update changed the token");

    let (report, receipt) = device::apply_update(&t, &good).unwrap();
    assert_eq!(report.counter, 1);
    assert_eq!(report.imported_keys, vec!["opcua-ecc".to_string(), "opcua-rsa".to_string()]);
    assert_eq!(verify_receipt(&receipt, &req.device_key).unwrap().counter, 1);
    for item in &update.items {
        let sel = KeySelector::Label(item.label.clone());
        assert_eq!(t.cert_chain(&sel).unwrap(), item.chain);
        let key = t.key(&sel).unwrap();
        assert!(key.info().non_exportable, "{} must be sensitive and non-extractable", item.label);
        let alg = if key.info().algorithm.is_rsa() { SignAlg::RsaPssSha256 } else { SignAlg::EcdsaP256Sha256 };
        let sig = key.sign(alg, b"hello").unwrap();
        PublicKey::from_certificate(&item.chain[0]).unwrap().verify(alg, b"hello", &sig).unwrap();
    }
    let after = t.device_info().unwrap();
    assert_eq!((after.counter, after.pending_request), (1, false));
    // Replayed: refused, nothing changes.
    let before = snapshot(&t);
    let e = device::apply_update(&t, &good).unwrap_err();
    assert!(e.to_string().contains("nonce mismatch"), "{e}");
    assert_eq!(snapshot(&t), before);
}

#[test]
fn a_central_made_key_is_rotated_on_the_token() {
    let Some(t) = token("prov-rotate") else { return };
    let central = Central::start();
    t.device_init().unwrap();
    t.trust_central(&central.ca_cert).unwrap();
    let one = &items()[1..2];
    let req = verify_request(&device::make_request(&t, one).unwrap()).unwrap();
    device::apply_update(&t, &central.sign(&central.answer(&req).0)).unwrap();
    let first = t.key(&KeySelector::Label("opcua-ecc".into())).unwrap().info().spki_der.clone();
    let req = verify_request(&device::make_request(&t, one).unwrap()).unwrap();
    assert_eq!(req.counter, 1);
    device::apply_update(&t, &central.sign(&central.answer(&req).0)).unwrap();
    let keys: Vec<_> = t.list().unwrap().into_iter().filter(|k| k.label == "opcua-ecc").collect();
    assert_eq!(keys.len(), 1, "the older key is gone");
    assert_ne!(keys[0].spki_der, first);
    assert_eq!(t.device_info().unwrap().counter, 2);
}

fn certvault(uri: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_certvault"))
        .arg("--pkcs11")
        .arg(uri)
        .args(args)
        .env("CERTVAULT_PIN", "123456")
        .env_remove("CERTVAULT_SOCKET")
        .output()
        .expect("run certvault")
}

fn ok(out: std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "certvault failed: {}{text}", String::from_utf8_lossy(&out.stderr));
    text
}

#[test]
fn the_cli_provisions_a_token() {
    let Some(_) = common::softhsm::setup(TOKENS) else { return };
    let central = Central::start();
    let uri = format!("pkcs11:token=prov-cli?module-path={}", common::softhsm::MODULE);
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    assert!(ok(certvault(&uri, &["device", "init"])).contains("transport key: certvault:transport rsa2048"));
    std::fs::write(p("central.der"), &central.ca_cert).unwrap();
    ok(certvault(&uri, &["device", "trust-central", "--cert", &p("central.der")]));
    let args = ["request", "--item", "label=opcua-ecc,alg=p256,uri=urn:m,origin=central", "--out", &p("req.p7")];
    ok(certvault(&uri, &args));
    let req = verify_request(&std::fs::read(p("req.p7")).unwrap()).unwrap();
    std::fs::write(p("upd.p7"), central.sign(&central.answer(&req).0)).unwrap();
    let out = ok(certvault(&uri, &["apply", "--in", &p("upd.p7"), "--receipt", &p("rec.p7")]));
    assert!(out.contains("stored opcua-ecc (key made by the central)"), "{out}");
    assert_eq!(verify_receipt(&std::fs::read(p("rec.p7")).unwrap(), &req.device_key).unwrap().counter, 1);
    let show = ok(certvault(&uri, &["device", "show"]));
    assert!(show.contains("update counter: 1") && show.contains("request outstanding: no"), "{show}");
    let again = certvault(&uri, &["apply", "--in", &p("upd.p7"), "--receipt", &p("rec2.p7")]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("nothing changed"));
}

#[test]
fn vaultd_fronting_a_token_provisions_it() {
    let Some(t) = token("prov-front") else { return };
    let central = Central::start();
    // Pinning the central on a fronted token is done on the token itself (its SO PIN is not checkable here).
    t.trust_central(&central.ca_cert).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("front.sock");
    let uri = format!("pkcs11:token=prov-front?module-path={}", common::softhsm::MODULE);
    let _daemon = KillOnDrop(
        common::vaultd::spawn_with(
            &["--pkcs11".as_ref(), uri.as_ref(), "--state-dir".as_ref(), dir.path().as_os_str()],
            &socket,
        )
        .unwrap(),
    );
    {
        let c = certvault::DaemonClient::connect(&socket, None).unwrap();
        c.login(common::softhsm::PIN).unwrap();
        let state = c.device_init().unwrap();
        assert!(state.transport_key.is_some());
        let req = verify_request(&device::make_request(&c, &items()[1..2]).unwrap()).unwrap();
        assert_eq!(req.transport_oaep, OaepHash::Sha1, "the daemon passes on the token's OAEP hash");
        let (report, _) = device::apply_update(&c, &central.sign(&central.answer(&req).0)).unwrap();
        assert_eq!((report.counter, report.imported_keys.len()), (1, 1));
        assert!(c.key(&KeySelector::Label("opcua-ecc".into())).unwrap().info().non_exportable);
        let e = c.trust_central(b"whatever", &central.ca_cert).unwrap_err();
        assert!(e.to_string().contains("on the token itself"), "{e}");
    }
}

/// Kills the daemon when the test ends, passed or failed.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn device_init_refuses_a_transport_key_it_did_not_make() {
    let Some(t) = token("prov-squat") else { return };
    // Someone made an ordinary (decrypting) key under the transport label before `device init`.
    t.generate(TRANSPORT_KEY_LABEL, certvault::KeyAlgorithm::Rsa { bits: 2048 }, Default::default()).unwrap();
    let e = t.device_init().unwrap_err();
    assert!(e.to_string().contains("not unwrap-only"), "{e}");
}
