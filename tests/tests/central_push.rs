//! Sealed private keys through GDS UpdateCertificate, end to end: the central's key maker (a real vaultd) makes a
//! key sealed to the server vault's transport key, the server's vaultd opens it inside (`import-sealed`), and after
//! ApplyChanges new channels are opened with the new key (the OPN signature verifies with the new certificate)
//! while a session opened before keeps reading. Refused: a key sealed to another vault, garbage, a key that is not
//! the certificate's; none of them leaves a key behind.

use std::sync::Arc;
use std::time::Duration;

use certvault::provision::KeyMaker;
use certvault::{csr, KeyAlgorithm, KeyStore, SharedKey};
use certvault_opcua::channel::asymmetric::LocalIdentity;
use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::client::{ClientOptions, Session, SessionOptions, UserIdentity};
use certvault_opcua::pki::Cert;
use certvault_opcua::server::access::UserRole;
use certvault_opcua::server::push::{PushConfig, SealedKeyImporter, SEALED_KEY_FORMAT};
use certvault_opcua::server::UserDatabase;
use certvault_tests::machine::{cheap_hash, MachineServer, MACHINE_URI};
use certvault_tests::{application_request, identity, init_tracing, Vaultd};
use opcua_types::StatusCode;

const CLIENT_URI: &str = "urn:certvault:test:push-client";
const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "s3cret-admin";

struct Fixture {
    server: MachineServer,
    client: LocalIdentity,
    /// The server's vault (its key, its transport key).
    server_vault: Vaultd,
    /// The central's vault (key maker, CA key).
    central_vault: Vaultd,
}

impl Fixture {
    async fn start() -> Fixture {
        init_tracing();
        let server_vault = Vaultd::start(env!("CARGO_BIN_EXE_vaultd"));
        let central_vault = Vaultd::start(env!("CARGO_BIN_EXE_vaultd"));
        server_vault.client().device_init().expect("the server vault gets its transport key");
        let store: Arc<dyn KeyStore> = Arc::new(server_vault.client());
        let importer: Arc<dyn SealedKeyImporter> = Arc::new(server_vault.client());
        let key = server_vault.generate_rsa("machine-server", 2048);
        let server = MachineServer::start_with_key(&server_vault, key, 64, |builder| {
            let mut users = UserDatabase::empty();
            users.add_hashed(ADMIN.into(), cheap_hash(ADMIN_PASSWORD), UserRole::Administrator).expect("admin");
            let mut push = PushConfig::new(store);
            push.sealed_key_importer = Some(importer);
            builder.users(users).push(push)
        })
        .await;
        let client = identity(server_vault.generate_rsa("push-client", 2048), "push client", CLIENT_URI);
        server.pki.trust(client.certificate()).expect("trust the client");
        Fixture { server, client, server_vault, central_vault }
    }

    fn options(&self, server_certificate: Vec<u8>) -> SessionOptions {
        let mut channel = ClientOptions::new(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt);
        channel.timeout = Duration::from_secs(20);
        channel.identity = Some(self.client.clone());
        channel.server_certificate = Some(server_certificate);
        let mut options = SessionOptions::new(channel);
        options.identity = UserIdentity::user_name(ADMIN, ADMIN_PASSWORD);
        options.application_uri = Some(CLIENT_URI.into());
        options
    }

    async fn connect(&self, server_certificate: Vec<u8>) -> certvault_opcua::Result<Session> {
        Session::connect(self.server.endpoint_url(), self.options(server_certificate)).await
    }

    /// The central's CA (key in the central's vault).
    fn ca(&self) -> (SharedKey, Vec<u8>) {
        let key = self.central_vault.generate_rsa("central-ca", 2048);
        let cert = csr::self_signed_ca(key.as_ref(), "certvault central CA", Duration::from_secs(86_400)).expect("CA");
        (key, cert)
    }

    /// The server vault's transport key (DER SPKI).
    fn transport(&self) -> Vec<u8> {
        self.server_vault.client().device_info().expect("device info").transport_key.expect("transport key").spki_der
    }
}

fn issue(ca: &(SharedKey, Vec<u8>), spki: &[u8]) -> Vec<u8> {
    csr::issue(
        ca.0.as_ref(),
        &ca.1,
        spki,
        &application_request("machine pushed", MACHINE_URI),
        Duration::from_secs(86_400),
    )
    .expect("issue")
}

fn status(e: certvault_opcua::Error) -> StatusCode {
    e.status_code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_key_from_the_central_serves_new_channels_after_apply_changes() {
    let fx = Fixture::start().await;
    let old_certificate = fx.server.certificate.clone();
    let admin = fx.connect(old_certificate.clone()).await.expect("admin session");
    let counter = fx.server.nodes.counter.clone();
    admin.read_value(&counter).await.expect("reads before");

    let maker = fx.central_vault.client();
    let made = maker.generate_sealed(KeyAlgorithm::Rsa { bits: 2048 }, &[fx.transport()]).expect("sealed key");
    let ca = fx.ca();
    let certificate = issue(&ca, &made.spki);
    let keys_before = fx.server_vault.client().list().expect("list").len();
    let required = admin
        .update_certificate_with_key(&certificate, std::slice::from_ref(&ca.1), SEALED_KEY_FORMAT, &made.sealed[0])
        .await
        .expect("UpdateCertificate with a sealed key");
    assert!(required, "applyChangesRequired");
    let keys = fx.server_vault.client().list().expect("list");
    assert_eq!(keys.len(), keys_before + 1, "the sealed key was opened into the server's vault");
    let imported = keys.iter().find(|k| k.spki_der == made.spki).expect("the imported key");
    assert!(imported.label.contains(".gds-"), "labelled as the key's GDS successor: {}", imported.label);
    assert!(!imported.made_inside, "an imported key says so");
    admin.apply_changes().await.expect("ApplyChanges");

    admin.read_value(&counter).await.expect("the session opened before still reads");
    let fresh = fx.connect(certificate.clone()).await.expect("a new channel to the new certificate (OPN verifies)");
    fresh.read_value(&counter).await.expect("the new session reads");
    let issued = Cert::from_der(&fx.server.current_certificate().expect("current")).expect("cert");
    assert_eq!(issued.spki(), made.spki.as_slice(), "the server serves the key the central made");
    assert!(fx.connect(old_certificate).await.is_err(), "the old certificate no longer opens a channel");
    for s in [admin, fresh] {
        let _ = s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_keys_for_another_vault_garbage_and_mismatches_are_refused() {
    let fx = Fixture::start().await;
    let admin = fx.connect(fx.server.certificate.clone()).await.expect("admin session");
    let maker = fx.central_vault.client();
    let ca = fx.ca();
    let keys_before = fx.server_vault.client().list().expect("list").len();

    // Sealed to another vault's transport key.
    let other = Vaultd::start(env!("CARGO_BIN_EXE_vaultd"));
    let other_transport = other.client().device_init().expect("init").transport_key.expect("transport").spki_der;
    let foreign = maker.generate_sealed(KeyAlgorithm::Rsa { bits: 2048 }, &[other_transport]).expect("sealed");
    let cert = issue(&ca, &foreign.spki);
    let e = admin
        .update_certificate_with_key(&cert, std::slice::from_ref(&ca.1), SEALED_KEY_FORMAT, &foreign.sealed[0])
        .await
        .expect_err("a key sealed to another vault");
    assert_eq!(status(e), StatusCode::BadSecurityChecksFailed);

    // Garbage, and a sealed key whose bytes were changed.
    let made = maker.generate_sealed(KeyAlgorithm::Rsa { bits: 2048 }, &[fx.transport()]).expect("sealed");
    let cert = issue(&ca, &made.spki);
    let e = admin
        .update_certificate_with_key(&cert, std::slice::from_ref(&ca.1), SEALED_KEY_FORMAT, b"not a sealed key")
        .await
        .expect_err("garbage");
    assert_eq!(status(e), StatusCode::BadInvalidArgument);
    let mut tampered = made.sealed[0].to_vec();
    let n = tampered.len();
    tampered[n - 5] ^= 0x40;
    let e = admin
        .update_certificate_with_key(&cert, std::slice::from_ref(&ca.1), SEALED_KEY_FORMAT, &tampered)
        .await
        .expect_err("tampered");
    assert_eq!(status(e), StatusCode::BadSecurityChecksFailed);

    // A good sealed key with the certificate of another key.
    let second = maker.generate_sealed(KeyAlgorithm::Rsa { bits: 2048 }, &[fx.transport()]).expect("sealed");
    let e = admin
        .update_certificate_with_key(&cert, std::slice::from_ref(&ca.1), SEALED_KEY_FORMAT, &second.sealed[0])
        .await
        .expect_err("a key that is not the certificate's");
    assert_eq!(status(e), StatusCode::BadSecurityChecksFailed);

    assert_eq!(fx.server_vault.client().list().expect("list").len(), keys_before, "no refusal left a key behind");
    admin.apply_changes().await.expect("ApplyChanges with nothing staged");
    assert_eq!(fx.server.current_certificate(), Some(fx.server.certificate.clone()), "nothing changed");
    let _ = admin.close().await;
}
