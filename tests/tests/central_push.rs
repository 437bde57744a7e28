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
use certvault_tests::{server_from_config, SoftHsmToken};
use opcua_types::StatusCode;

const CLIENT_URI: &str = "urn:certvault:test:push-client";
const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "s3cret-admin";
/// Common name of an X.509 administrator (its key in the central's vault).
const X509_ADMIN: &str = "central gds admin";

/// The server's key, the vault it lives in, and that vault's sealed key importer.
type ServerVault = (SharedKey, Arc<dyn KeyStore>, Arc<dyn SealedKeyImporter>);

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
        Self::start_with(None).await
    }

    /// The server's key, vault and importer: vaultd by default, or a PKCS#11 token.
    async fn start_with(token: Option<ServerVault>) -> Fixture {
        init_tracing();
        let server_vault = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
        let central_vault = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
        server_vault.client().device_init().expect("the server vault gets its transport key");
        let (key, store, importer) = match token {
            Some(t) => t,
            None => {
                let store: Arc<dyn KeyStore> = Arc::new(server_vault.client());
                let importer: Arc<dyn SealedKeyImporter> = Arc::new(server_vault.client());
                (server_vault.generate_rsa("machine-server", 2048), store, importer)
            }
        };
        let server = MachineServer::start_with_key(&server_vault, key, 64, |builder| {
            let mut users = UserDatabase::empty();
            users.add_hashed(ADMIN.into(), cheap_hash(ADMIN_PASSWORD), UserRole::Administrator).expect("admin");
            users.map_certificate_common_name(X509_ADMIN, UserRole::Administrator);
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
    let other = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
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

/// The server's key on a PKCS#11 token (SoftHSM2): the sealed key is unwrapped into the token with C_UnwrapKey.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_key_is_unwrapped_into_a_pkcs11_token() {
    use certvault::provision::Recipient;
    use certvault::KeySelector;
    // The only PKCS#11 user of this test binary (SOFTHSM2_CONF is read when the module first loads).
    let Some(softhsm) = SoftHsmToken::create("push") else { return };
    let token = softhsm.token.clone();
    let device = token.device_init().expect("transport key on the token");
    let transport = device.transport_key.expect("transport key").spki_der;
    let (_, oaep) = token.begin_request().expect("the token's OAEP hash");
    token.generate("machine-server", KeyAlgorithm::Rsa { bits: 2048 }, Default::default()).expect("key");
    let key: SharedKey = token.open_key(&KeySelector::Label("machine-server".into())).expect("key handle");
    let store: Arc<dyn KeyStore> = token.clone();
    let importer: Arc<dyn SealedKeyImporter> = token.clone();
    let fx = Fixture::start_with(Some((key, store, importer))).await;
    let admin = fx.connect(fx.server.certificate.clone()).await.expect("admin session");
    let maker = fx.central_vault.client();
    let recipient = Recipient { spki: transport, oaep };
    let ca = fx.ca();
    let before = token.list().expect("list").len();

    // A key that is not the certificate's: refused, nothing left on the token.
    let made =
        maker.generate_sealed_to(KeyAlgorithm::Rsa { bits: 2048 }, std::slice::from_ref(&recipient)).expect("sealed");
    let other =
        maker.generate_sealed_to(KeyAlgorithm::Rsa { bits: 2048 }, std::slice::from_ref(&recipient)).expect("sealed");
    let certificate = issue(&ca, &made.spki);
    let e = admin
        .update_certificate_with_key(&certificate, std::slice::from_ref(&ca.1), SEALED_KEY_FORMAT, &other.sealed[0])
        .await
        .expect_err("a key that is not the certificate's");
    assert_eq!(status(e), StatusCode::BadSecurityChecksFailed);
    assert_eq!(token.list().expect("list").len(), before, "the refused key was destroyed");

    admin
        .update_certificate_with_key(&certificate, std::slice::from_ref(&ca.1), SEALED_KEY_FORMAT, &made.sealed[0])
        .await
        .expect("UpdateCertificate with a key sealed to the token");
    admin.apply_changes().await.expect("ApplyChanges");
    let keys = token.list().expect("list");
    let imported = keys.iter().find(|k| k.spki_der == made.spki).expect("the key is on the token");
    assert!(imported.non_exportable, "unwrapped as a non-extractable token key");
    admin.read_value(&fx.server.nodes.counter).await.expect("the session opened before reads on");
    let fresh = fx.connect(certificate.clone()).await.expect("a new channel to the token's new key");
    fresh.read_value(&fx.server.nodes.counter).await.expect("reads");
    for s in [admin, fresh] {
        let _ = s.close().await;
    }
}

// ---- `certvault-central push`: the central renews a running server and pushes its CRL.

mod central {
    use super::*;
    use base64::Engine as _;
    use certvault_central::push::{self, Issuance, KeySource, PushRequest, PushTarget};
    use certvault_central::registry::{self, Entitlement, RevocationReason};
    use certvault_central::{issuer::Subject, Central, Db};
    use certvault_opcua::pki::PkiStore;

    const SERVER_DEVICE: &str = "CV-MACHINE-A";
    const CA: &str = "plant";
    const CENTRAL_URI: &str = "urn:certvault:test:central";

    pub(super) struct CentralFixture {
        pub fx: Fixture,
        pub central: Central,
        pub target: PushTarget,
        pub ca_cert: Vec<u8>,
        _dir: tempfile::TempDir,
    }

    pub(super) async fn start() -> CentralFixture {
        let fx = Fixture::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path().join("central.sqlite").to_str().expect("utf-8")).await.expect("database");
        let central = Central::new(db);
        fx.central_vault.generate_rsa("plant-ca", 2048);
        let info = central
            .create_ca(CA, &fx.central_vault.key_uri("plant-ca"), "certvault plant CA", 3650)
            .await
            .expect("CA in the central's vault");
        let ca_cert = base64::engine::general_purpose::STANDARD.decode(info.certificate).expect("CA certificate");
        registry::add_device_type(central.db(), "opcua-server", "").await.expect("device type");
        registry::add_device_type(central.db(), "opcua-client", "").await.expect("device type");
        let transport = base64::engine::general_purpose::STANDARD.encode(fx.transport());
        registry::entitle(
            central.db(),
            &Entitlement {
                serial: SERVER_DEVICE.into(),
                device_type: "opcua-server".into(),
                device_public_key: None,
                transport_public_key: Some(transport),
            },
        )
        .await
        .expect("entitle the server's dongle");
        // The central's OPC UA client: key in the central's vault; the server trusts it, the central's trust store
        // trusts the server's current certificate and the central's own CA (for the certificates it pushes).
        let client = identity(fx.central_vault.generate_rsa("central-client", 2048), "central", CENTRAL_URI);
        fx.server.pki.trust(client.certificate()).expect("the server trusts the central");
        let pki = Arc::new(PkiStore::create_or_open(dir.path().join("pki")).expect("central pki"));
        pki.trust(&fx.server.certificate).expect("trust the server");
        pki.trust(&ca_cert).expect("trust the central's CA");
        let target = PushTarget {
            endpoint_url: fx.server.endpoint_url().to_owned(),
            client,
            client_application_uri: CENTRAL_URI.into(),
            pki,
            user: UserIdentity::user_name(ADMIN, ADMIN_PASSWORD),
            timeout: Duration::from_secs(20),
        };
        CentralFixture { fx, central, target, ca_cert, _dir: dir }
    }

    pub(super) fn request(key: KeySource, trust_list: bool) -> PushRequest {
        PushRequest { device: SERVER_DEVICE.into(), ca: CA.into(), validity_days: 30, key, trust_list }
    }

    pub(super) async fn entitle_client(cf: &CentralFixture, serial: &str) {
        registry::entitle(
            cf.central.db(),
            &Entitlement { serial: serial.to_owned(), device_type: "opcua-client".into(), ..Default::default() },
        )
        .await
        .expect("entitle a client dongle");
    }

    /// A client certificate issued and recorded by the central for `key`.
    pub(super) async fn client_certificate(
        cf: &CentralFixture,
        device: &str,
        key: &SharedKey,
        uri: &str,
    ) -> (Vec<u8>, String) {
        let hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let recorded = push::issue_recorded(
            &cf.central,
            &Issuance {
                device,
                ca: CA,
                subject: Subject::PublicKey(&key.info().spki_der),
                common_name: "line client",
                application_uri: uri,
                host_names: &hosts,
                validity_days: 30,
            },
            None,
        )
        .await
        .expect("issue a client certificate");
        (recorded.chain[0].clone(), recorded.serial_number)
    }

    pub(super) async fn revoke(cf: &CentralFixture, serial: &str) {
        cf.central.revoke(serial, RevocationReason::KeyCompromise).await.expect("revoke");
    }

    pub(super) async fn certificates(cf: &CentralFixture) -> Vec<String> {
        registry::certificates(cf.central.db(), Some(SERVER_DEVICE))
            .await
            .expect("list")
            .into_iter()
            .map(|c| c.serial_number)
            .collect()
    }
}

fn issuer_is(cert: &[u8], ca_cert: &[u8]) -> bool {
    let leaf = Cert::from_der(cert).expect("leaf");
    let ca = Cert::from_der(ca_cert).expect("ca");
    certvault_opcua::pki::check_chain_signatures(&[leaf, ca]).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_push_rotates_the_server_certificate_while_a_session_stays_connected() {
    let cf = central::start().await;
    let fx = &cf.fx;
    let old_certificate = fx.server.certificate.clone();
    let watcher = fx.connect(old_certificate.clone()).await.expect("a session opened before the push");
    let counter = fx.server.nodes.counter.clone();
    watcher.read_value(&counter).await.expect("reads before");

    // The server makes the key in its own vault (CreateSigningRequest), the central's CA issues it.
    let report = certvault_central::push::push(
        &cf.central,
        &cf.target,
        &central::request(certvault_central::push::KeySource::Server, false),
    )
    .await
    .expect("push with the key made by the server");
    assert_eq!(report.key_made_by, "server");
    assert_eq!(report.policy, "Aes256_Sha256_RsaPss", "the strongest policy both sides have");
    assert!(issuer_is(&report.certificate, &cf.ca_cert), "the new certificate's issuer is the central's CA");
    assert_eq!(fx.server.current_certificate(), Some(report.certificate.clone()));
    assert!(central::certificates(&cf).await.contains(&report.serial_number), "recorded and listed by the central");
    watcher.read_value(&counter).await.expect("the session opened before keeps reading");
    let fresh = fx.connect(report.certificate.clone()).await.expect("a new connection sees the new certificate");
    fresh.read_value(&counter).await.expect("reads");

    // Again, with the key made by the central and sealed to the server's vault; CA and CRL into the trust list; the
    // administrator is an X.509 user this time, its key in the central's vault.
    let admin_key = fx.central_vault.generate_rsa("gds-admin-user", 2048);
    let admin_cert = certvault_tests::self_signed(&admin_key, X509_ADMIN, "urn:certvault:test:gds-admin-user");
    fx.server.user_pki.trust(&admin_cert).expect("the server trusts the X.509 administrator");
    let mut x509_target = cf.target.clone();
    x509_target.user = UserIdentity::x509(admin_cert, admin_key);
    let second = certvault_central::push::push(
        &cf.central,
        &x509_target,
        &central::request(
            certvault_central::push::KeySource::Central { maker: Arc::new(fx.central_vault.client()), transport: None },
            true,
        ),
    )
    .await
    .expect("push with the key made by the central");
    assert_eq!(second.key_made_by, "central");
    assert_ne!(second.serial_number, report.serial_number);
    let served = Cert::from_der(&fx.server.current_certificate().expect("current")).expect("cert");
    assert_eq!(served.der(), second.certificate.as_slice());
    let keys = fx.server_vault.client().list().expect("list");
    assert!(
        keys.iter().any(|k| k.spki_der == served.spki() && !k.made_inside),
        "the central's key is in the server's vault"
    );
    watcher.read_value(&counter).await.expect("the first session still reads");
    fresh.read_value(&counter).await.expect("the second session still reads");
    let third = fx.connect(second.certificate.clone()).await.expect("a new connection to the central-made key");
    third.read_value(&counter).await.expect("reads");
    let trust = third.read_trust_list(None).await.expect("trust list");
    let trusted: Vec<Vec<u8>> =
        trust.trusted_certificates.unwrap_or_default().into_iter().filter_map(|b| b.value).collect();
    assert!(trusted.contains(&cf.ca_cert), "the CA is in the server's trust list");
    assert_eq!(trust.trusted_crls.unwrap_or_default().len(), 1, "and its CRL");
    for s in [watcher, fresh, third] {
        let _ = s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_certificate_is_refused_after_the_central_pushes_its_crl() {
    let cf = central::start().await;
    let fx = &cf.fx;
    central::entitle_client(&cf, "CV-CLIENT-REVOKED").await;
    central::entitle_client(&cf, "CV-CLIENT-GOOD").await;
    let revoked_key = fx.central_vault.generate_rsa("revoked-client", 2048);
    let good_key = fx.central_vault.generate_rsa("good-client", 2048);
    let (revoked_cert, revoked_serial) =
        central::client_certificate(&cf, "CV-CLIENT-REVOKED", &revoked_key, "urn:certvault:test:revoked").await;
    let (good_cert, _) = central::client_certificate(&cf, "CV-CLIENT-GOOD", &good_key, "urn:certvault:test:good").await;
    // The CA and its (empty) CRL go to the server: both clients get in.
    certvault_central::push::push_trust_list(&cf.central, &cf.target, "plant").await.expect("push the CA and CRL");
    let connect = |key: &SharedKey, cert: &[u8], uri: &str| {
        let mut options = fx.options(fx.server.certificate.clone());
        options.channel.identity = Some(LocalIdentity::new(key.clone(), cert.to_vec()).expect("identity"));
        options.channel.application_uri = Some(uri.into());
        options.application_uri = Some(uri.into());
        Session::connect(fx.server.endpoint_url(), options)
    };
    let before = connect(&revoked_key, &revoked_cert, "urn:certvault:test:revoked").await.expect("not yet revoked");
    let _ = before.close().await;

    central::revoke(&cf, &revoked_serial).await;
    certvault_central::push::push_trust_list(&cf.central, &cf.target, "plant").await.expect("push the new CRL");
    let refused = connect(&revoked_key, &revoked_cert, "urn:certvault:test:revoked").await;
    let Err(e) = refused else { panic!("the revoked client was let in") };
    assert_eq!(status(e), StatusCode::BadCertificateRevoked, "the server names the reason");
    let good = connect(&good_key, &good_cert, "urn:certvault:test:good").await.expect("a client not revoked connects");
    good.read_value(&fx.server.nodes.counter).await.expect("and reads");
    let _ = good.close().await;
}

/// machine-a's configuration switch `[push] sealed_keys = true`: the central pushes a key it made, sealed to the
/// server vault's transport key; the certificate file is rewritten, and a restart from the unchanged file serves
/// the new certificate with the imported key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_keys_from_the_configuration_file_survive_a_restart() {
    use base64::Engine as _;
    use certvault_central::push::{KeySource, PushRequest, PushTarget};
    use certvault_central::registry::{self, Entitlement};
    use certvault_central::{Central, Db};
    use certvault_opcua::pki::PkiStore;
    init_tracing();
    let server_vault = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let central_vault = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let transport = server_vault.client().device_init().expect("init").transport_key.expect("transport").spki_der;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = server_vault.generate_rsa("machine-a", 2048);
    let certificate = certvault_tests::self_signed(&key, "machine-a", MACHINE_URI);
    std::fs::write(dir.path().join("machine-a.der"), &certificate).expect("certificate file");
    let users = format!(
        "[[user]]\nname = \"{ADMIN}\"\npassword = \"{}\"\nrole = \"administrator\"\n",
        cheap_hash(ADMIN_PASSWORD)
    );
    std::fs::write(dir.path().join("users.toml"), users).expect("users file");
    let config = format!(
        r#"
[server]
endpoint_url = "opc.tcp://127.0.0.1:0/"
application_uri = "{MACHINE_URI}"

[identity]
key = "{}"
certificate = "machine-a.der"

[security]
policies = ["Basic256Sha256", "Aes256_Sha256_RsaPss"]
modes = ["SignAndEncrypt"]
pki = "pki"

[users]
anonymous = false
file = "users.toml"

[push]
enabled = true
sealed_keys = true
"#,
        server_vault.key_uri("machine-a")
    );
    let path = dir.path().join("machine-a.toml");
    std::fs::write(&path, config).expect("config");
    let load = || server_from_config(&path);
    let server = load().await.start().await.expect("machine-a starts with push and sealed keys");

    let db = Db::open(dir.path().join("central.sqlite").to_str().expect("utf-8")).await.expect("db");
    let central = Central::new(db);
    central_vault.generate_rsa("plant-ca", 2048);
    let ca = central.create_ca("plant", &central_vault.key_uri("plant-ca"), "plant CA", 365).await.expect("CA");
    let ca_cert = base64::engine::general_purpose::STANDARD.decode(ca.certificate).expect("b64");
    registry::add_device_type(central.db(), "opcua-server", "").await.expect("type");
    registry::entitle(
        central.db(),
        &Entitlement { serial: "CV-A".into(), device_type: "opcua-server".into(), ..Default::default() },
    )
    .await
    .expect("entitle");
    let client = identity(central_vault.generate_rsa("central-client", 2048), "central", CLIENT_URI);
    PkiStore::create_or_open(dir.path().join("pki")).expect("server pki").trust(client.certificate()).expect("trust");
    let central_pki = Arc::new(PkiStore::create_or_open(dir.path().join("central-pki")).expect("central pki"));
    central_pki.trust(&certificate).expect("trust the server");
    central_pki.trust(&ca_cert).expect("trust the CA");
    let target = PushTarget {
        endpoint_url: server.endpoint_url().to_owned(),
        client,
        client_application_uri: CLIENT_URI.into(),
        pki: central_pki,
        user: UserIdentity::user_name(ADMIN, ADMIN_PASSWORD),
        timeout: Duration::from_secs(20),
    };
    let request = PushRequest {
        device: "CV-A".into(),
        ca: "plant".into(),
        validity_days: 30,
        key: KeySource::Central {
            maker: Arc::new(central_vault.client()),
            transport: Some(certvault::provision::Recipient::new(transport)),
        },
        trust_list: false,
    };
    let report = certvault_central::push::push(&central, &target, &request).await.expect("push a sealed key");
    assert_eq!(report.key_made_by, "central");
    let file = std::fs::read(dir.path().join("machine-a.der")).expect("certificate file");
    assert!(file.starts_with(&report.certificate), "the certificate file holds the new chain");
    server.shutdown().await;

    let restarted = load().await.start().await.expect("machine-a restarts with the pushed certificate");
    assert_eq!(restarted.current_certificate(), Some(report.certificate.clone()), "served after a restart");
    let imported = server_vault.client().list().expect("list");
    let served = Cert::from_der(&report.certificate).expect("cert");
    assert!(imported.iter().any(|k| k.spki_der == served.spki() && k.label.starts_with("machine-a.gds-")));
    let mut target = target;
    target.endpoint_url = restarted.endpoint_url().to_owned();
    let session = certvault_central::push::connect(&target).await.expect("the central connects to the new key");
    let _ = session.close().await;
    restarted.shutdown().await;
}
