//! GDS push (OPC 10000-12 §7.7) on our server, end to end over real sockets with the server's key in a real vaultd:
//!
//! - renewal: CreateSigningRequest with a new key made inside the vaultd, the CSR signed by a CA whose key is in
//!   the vaultd too (made at run time), UpdateCertificate, ApplyChanges; sessions opened before stay connected and
//!   read, a new connection sees the new certificate in GetEndpoints and opens its channel to it, the old
//!   certificate no longer opens a channel, and the chain is stored beside the new key in the vault;
//! - the TrustList: read, replaced with CloseAndUpdate, AddCertificate, RemoveCertificate, each deciding whether a
//!   second client gets in; GetRejectedList lists that client after its refusal;
//! - refusals: an operator (not an administrator), a Sign-only channel, PEM/PFX/sealed private keys, a certificate
//!   for another key, bad file handles and modes; UserExecutable is false for the operator.

use std::sync::Arc;
use std::time::Duration;

use certvault::csr;
use certvault::{KeySelector, KeyStore, SharedKey};
use certvault_opcua::channel::asymmetric::LocalIdentity;
use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::client::{Client, ClientOptions, Session, SessionOptions, UserIdentity};
use certvault_opcua::pki::{Cert, TrustListMasks};
use certvault_opcua::server::access::UserRole;
use certvault_opcua::server::push::PushConfig;
use certvault_opcua::server::UserDatabase;
use certvault_tests::machine::{cheap_hash, MachineServer, MACHINE_URI, OPERATOR, OPERATOR_PASSWORD};
use certvault_tests::{identity, init_tracing, self_signed, Vaultd};
use certvault_tests::{server_from_config, SoftHsmToken};
use opcua_types::{
    AttributeId, ByteString, MethodId, NodeId, ObjectId, ReadValueId, StatusCode, TimestampsToReturn,
    TrustListDataType, VariableId, Variant,
};

const CLIENT_URI: &str = "urn:certvault:test:gds-client";
const INTRUDER_URI: &str = "urn:certvault:test:gds-intruder";
const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "s3cret-admin";
const POLICY: SecurityPolicy = SecurityPolicy::Basic256Sha256;

struct Fixture {
    server: MachineServer,
    client: LocalIdentity,
    vaultd: Vaultd,
}

impl Fixture {
    async fn start() -> Fixture {
        Self::start_with(None).await
    }

    /// The server's key and its vault: a vaultd key by default, or `(key, store)` (a PKCS#11 token).
    async fn start_with(key: Option<(SharedKey, Arc<dyn KeyStore>)>) -> Fixture {
        init_tracing();
        let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
        let (key, store) = match key {
            Some(pair) => pair,
            None => {
                let store: Arc<dyn KeyStore> = Arc::new(vaultd.client());
                (vaultd.generate_rsa("machine-server", 2048), store)
            }
        };
        let server = MachineServer::start_with_key(&vaultd, key, 64, |builder| {
            let mut users = UserDatabase::empty();
            users.add_hashed(ADMIN.into(), cheap_hash(ADMIN_PASSWORD), UserRole::Administrator).expect("admin");
            users.add_hashed(OPERATOR.into(), cheap_hash(OPERATOR_PASSWORD), UserRole::Operator).expect("operator");
            // Short tokens may be granted, so a test can watch a channel renew after ApplyChanges.
            builder.users(users).push(PushConfig::new(store)).token_lifetime_ms(1_000, 3_600_000)
        })
        .await;
        let client = identity(vaultd.generate_rsa("gds-client", 2048), "gds client", CLIENT_URI);
        server.pki.trust(client.certificate()).expect("trust the client");
        Fixture { server, client, vaultd }
    }

    fn options(&self, app: &LocalIdentity, uri: &str, mode: SecurityMode, user: UserIdentity) -> SessionOptions {
        self.options_to(app, uri, mode, user, self.server.certificate.clone())
    }

    fn options_to(
        &self,
        app: &LocalIdentity,
        uri: &str,
        mode: SecurityMode,
        user: UserIdentity,
        server_certificate: Vec<u8>,
    ) -> SessionOptions {
        let mut channel = ClientOptions::new(POLICY, mode);
        channel.timeout = Duration::from_secs(20);
        channel.identity = Some(app.clone());
        channel.server_certificate = Some(server_certificate);
        let mut options = SessionOptions::new(channel);
        options.identity = user;
        options.application_uri = Some(uri.into());
        options
    }

    async fn session(&self, mode: SecurityMode, user: UserIdentity) -> Session {
        let options = self.options(&self.client, CLIENT_URI, mode, user);
        Session::connect(self.server.endpoint_url(), options).await.expect("session")
    }

    async fn admin(&self) -> Session {
        self.session(SecurityMode::SignAndEncrypt, UserIdentity::user_name(ADMIN, ADMIN_PASSWORD)).await
    }

    /// The server certificate GetEndpoints announces on a fresh connection.
    async fn announced_certificate(&self) -> Vec<u8> {
        let client = Client::connect_with(
            self.server.endpoint_url(),
            ClientOptions::new(SecurityPolicy::None, SecurityMode::None),
        )
        .await
        .expect("discovery channel");
        let endpoints = client.get_endpoints().await.expect("GetEndpoints");
        let _ = client.shutdown().await;
        let secured = endpoints.iter().find(|e| !e.server_certificate.is_null()).expect("a secured endpoint");
        secured.server_certificate.value.clone().unwrap_or_default()
    }

    /// A CA whose key is in the vaultd.
    fn ca(&self) -> (SharedKey, Vec<u8>) {
        let key = self.vaultd.generate_rsa("gds-test-ca", 2048);
        let cert = csr::self_signed_ca(key.as_ref(), "certvault test GDS CA", Duration::from_secs(86_400)).expect("CA");
        (key, cert)
    }
}

fn status(e: certvault_opcua::Error) -> StatusCode {
    e.status_code()
}

fn thumbprint(der: &[u8]) -> String {
    Cert::from_der(der).expect("certificate").thumbprint().iter().map(|b| format!("{b:02x}")).collect()
}

/// The UserExecutable attribute of CreateSigningRequest as `session` sees it.
async fn executable(session: &Session) -> Option<Variant> {
    let item = ReadValueId {
        node_id: MethodId::ServerConfiguration_CreateSigningRequest.into(),
        attribute_id: AttributeId::UserExecutable as u32,
        ..Default::default()
    };
    session.read(vec![item], TimestampsToReturn::Neither, 0.0).await.expect("read")[0].value.clone()
}

/// Calls a TrustList method.
async fn tl(session: &Session, method: MethodId, args: Vec<Variant>) -> Result<Vec<Variant>, StatusCode> {
    let trust_list: NodeId = ObjectId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList.into();
    session.call_method(&trust_list, &method.into(), args).await.map_err(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_by_push_keeps_sessions_and_new_connections_see_the_new_certificate() {
    let fx = Fixture::start().await;
    let old_certificate = fx.server.certificate.clone();
    let admin = fx.admin().await;
    // This channel renews its token every 750 ms, before and after ApplyChanges.
    let mut options =
        fx.options(&fx.client, CLIENT_URI, SecurityMode::Sign, UserIdentity::user_name(OPERATOR, OPERATOR_PASSWORD));
    options.channel.requested_lifetime = Duration::from_secs(1);
    let operator = Session::connect(fx.server.endpoint_url(), options).await.expect("operator session");
    let counter = fx.server.nodes.counter.clone();
    assert!(operator.read_value(&counter).await.is_ok(), "the operator reads before the renewal");

    let keys_before = fx.vaultd.client().list().expect("list").len();
    let request = admin.create_signing_request(true, None).await.expect("CreateSigningRequest");
    let keys = fx.vaultd.client().list().expect("list");
    assert_eq!(keys.len(), keys_before + 1, "regeneratePrivateKey made a new key inside the vaultd");
    let new_key = keys.iter().find(|k| k.label.contains(".gds-")).expect("the new key's label").clone();
    assert_eq!(fx.announced_certificate().await, old_certificate, "the old key serves until ApplyChanges");

    let (ca_key, ca_cert) = fx.ca();
    let certificate =
        csr::issue_from_csr(ca_key.as_ref(), &ca_cert, &request, Duration::from_secs(86_400)).expect("sign the CSR");
    let issued = Cert::from_der(&certificate).expect("issued certificate");
    assert_eq!(issued.spki(), new_key.spki_der.as_slice(), "the CSR carries the new key");
    assert!(issued.uris().iter().any(|u| u == MACHINE_URI), "the CSR keeps the ApplicationUri");

    let apply_required =
        admin.update_certificate(&certificate, std::slice::from_ref(&ca_cert)).await.expect("UpdateCertificate");
    assert!(apply_required, "UpdateCertificate answers applyChangesRequired");
    assert_eq!(fx.announced_certificate().await, old_certificate, "nothing changes before ApplyChanges");
    let stored = fx.vaultd.client().cert_chain(&KeySelector::Id(new_key.id.clone())).expect("stored chain");
    assert_eq!(stored, vec![certificate.clone(), ca_cert.clone()], "the chain is stored beside the new key");

    admin.apply_changes().await.expect("ApplyChanges");

    // Sessions opened before stay connected and keep working on their channels (old key, still in the vault).
    operator.read_value(&counter).await.expect("the operator session opened before still reads");
    // Token renewals of the old channel still use the old key (OpenSecureChannel renew, signed and decrypted in
    // the vault): after several, the session reads on, on the same channel.
    let state = operator.channel().channel_state();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    operator.read_value(&counter).await.expect("the old channel renewed its token with the old key");
    let after = operator.channel().channel_state();
    assert_eq!(after.secure_channel_id, state.secure_channel_id, "still the channel opened before the renewal");
    assert!(after.token_id > state.token_id, "the token was renewed: {state:?} -> {after:?}");
    admin.read_value(&counter).await.expect("the admin session opened before still reads");

    // A new connection sees the new certificate and opens its channel to the new key.
    let announced = fx.announced_certificate().await;
    assert_eq!(thumbprint(&announced), thumbprint(&certificate), "GetEndpoints announces the new certificate");
    assert_eq!(fx.server.current_certificate(), Some(certificate.clone()));
    let fresh = Session::connect(
        fx.server.endpoint_url(),
        fx.options_to(
            &fx.client,
            CLIENT_URI,
            SecurityMode::SignAndEncrypt,
            UserIdentity::user_name(OPERATOR, OPERATOR_PASSWORD),
            certificate.clone(),
        ),
    )
    .await
    .expect("a new session with the new certificate");
    fresh.read_value(&counter).await.expect("the new session reads");
    let stale = Session::connect(
        fx.server.endpoint_url(),
        fx.options_to(
            &fx.client,
            CLIENT_URI,
            SecurityMode::SignAndEncrypt,
            UserIdentity::user_name(OPERATOR, OPERATOR_PASSWORD),
            old_certificate.clone(),
        ),
    )
    .await;
    assert!(stale.is_err(), "a channel encrypted for the old certificate is no longer opened");

    // A second renewal without a new key: the CSR is signed by the now current key.
    let again = admin.create_signing_request(false, Some("CN=machine renewed, O=certvault tests")).await.expect("CSR");
    let params = Cert::from_der(
        &csr::issue_from_csr(ca_key.as_ref(), &ca_cert, &again, Duration::from_secs(86_400)).expect("sign"),
    )
    .expect("cert");
    assert_eq!(params.spki(), new_key.spki_der.as_slice(), "without regeneration the current key is kept");
    assert_eq!(params.common_name(), Some("machine renewed"));
    // Staged and cancelled: ApplyChanges then changes nothing.
    let cancelled =
        csr::issue_from_csr(ca_key.as_ref(), &ca_cert, &again, Duration::from_secs(86_400)).expect("sign again");
    admin.update_certificate(&cancelled, &[]).await.expect("UpdateCertificate");
    admin.cancel_changes().await.expect("CancelChanges");
    admin.apply_changes().await.expect("ApplyChanges with nothing staged");
    assert_eq!(
        thumbprint(&fx.announced_certificate().await),
        thumbprint(&certificate),
        "the cancelled one is not used"
    );
    for s in [admin, operator, fresh] {
        let _ = s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals() {
    let fx = Fixture::start().await;
    let operator = fx.session(SecurityMode::SignAndEncrypt, UserIdentity::user_name(OPERATOR, OPERATOR_PASSWORD)).await;
    let denied = operator.create_signing_request(false, None).await.expect_err("operators may not push");
    assert_eq!(status(denied), StatusCode::BadUserAccessDenied);
    let denied = operator.read_trust_list(None).await.expect_err("operators may not read the trust list");
    assert_eq!(status(denied), StatusCode::BadUserAccessDenied);

    // UserExecutable follows the role.
    assert_eq!(executable(&operator).await, Some(Variant::Boolean(false)));

    let signed_only = fx.session(SecurityMode::Sign, UserIdentity::user_name(ADMIN, ADMIN_PASSWORD)).await;
    let refused = signed_only.create_signing_request(false, None).await.expect_err("Sign-only channel");
    assert_eq!(status(refused), StatusCode::BadSecurityModeInsufficient);
    let refused = signed_only.get_rejected_list().await.expect_err("Sign-only channel");
    assert_eq!(status(refused), StatusCode::BadSecurityModeInsufficient);

    let admin = fx.admin().await;
    assert_eq!(executable(&admin).await, Some(Variant::Boolean(true)));
    let property = |id: VariableId| {
        let id: NodeId = id.into();
        let admin = &admin;
        async move { admin.read_value(&id).await }
    };
    assert_eq!(property(VariableId::ServerConfiguration_HasSecureElement).await.ok(), Some(Variant::Boolean(true)));
    assert_eq!(property(VariableId::ServerConfiguration_MulticastDnsEnabled).await.ok(), Some(Variant::Boolean(false)));
    assert_eq!(
        property(VariableId::ServerConfiguration_MaxTrustListSize).await.ok(),
        Some(Variant::UInt32(1024 * 1024))
    );
    let formats = property(VariableId::ServerConfiguration_SupportedPrivateKeyFormats).await.expect("formats");
    assert_eq!(formats, Variant::from(vec![opcua_types::UAString::from("CertVaultSealed")]));
    let certificate = fx.server.certificate.clone();
    // Not key material: any bytes do, the format alone is refused.
    for format in ["PEM", "PFX", "CertVaultSealed"] {
        let refused = admin
            .update_certificate_with_key(&certificate, &[], format, b"not a key")
            .await
            .expect_err("private keys never pass through the server process");
        assert_eq!(status(refused), StatusCode::BadNotSupported, "{format}");
    }
    let other_key = fx.vaultd.generate_rsa("unrelated", 2048);
    let foreign = self_signed(&other_key, "machine", MACHINE_URI);
    let refused = admin.update_certificate(&foreign, &[]).await.expect_err("a certificate for another key");
    assert_eq!(status(refused), StatusCode::BadSecurityChecksFailed);
    let refused = admin.update_certificate(b"garbage", &[]).await.expect_err("not a certificate");
    assert_eq!(status(refused), StatusCode::BadCertificateInvalid);
    // A certificate for the current key whose issuer list is another CA's: the chain's integrity fails.
    let request = admin.create_signing_request(false, None).await.expect("CSR for the current key");
    let (ca_key, ca_cert) = fx.ca();
    let other_ca_key = fx.vaultd.generate_rsa("other-ca", 2048);
    let other_ca = csr::self_signed_ca(other_ca_key.as_ref(), "other CA", Duration::from_secs(3600)).expect("CA");
    let issued = csr::issue_from_csr(ca_key.as_ref(), &ca_cert, &request, Duration::from_secs(3600)).expect("sign");
    let refused = admin.update_certificate(&issued, &[other_ca]).await.expect_err("issuers that did not sign it");
    assert_eq!(status(refused), StatusCode::BadSecurityChecksFailed);
    let regenerated = admin.create_signing_request(true, None).await;
    assert!(regenerated.is_ok(), "a regeneration with our 32-byte nonce works");

    // File handles and modes.
    use MethodId as M;
    let read = M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Read;
    let write = M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Write;
    let open = M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Open;
    let close = M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Close;
    assert_eq!(
        tl(&admin, read, vec![Variant::UInt32(4242), Variant::Int32(100)]).await.err(),
        Some(StatusCode::BadInvalidArgument),
        "unknown handle"
    );
    assert_eq!(tl(&admin, open, vec![Variant::Byte(3)]).await.err(), Some(StatusCode::BadInvalidArgument), "bad mode");
    let handle = tl(&admin, open, vec![Variant::Byte(1)]).await.expect("open for reading")[0].clone();
    assert_eq!(
        tl(&admin, write, vec![handle.clone(), Variant::ByteString(ByteString::from(vec![1, 2, 3]))]).await.err(),
        Some(StatusCode::BadNotWritable),
        "writing a read handle"
    );
    assert_eq!(
        tl(&admin, open, vec![Variant::Byte(6)]).await.err(),
        Some(StatusCode::BadInvalidState),
        "no writer while a reader has the file open"
    );
    // Another session may not use this session's handle.
    let other = fx.admin().await;
    let foreign_handle = tl(&other, close, vec![handle.clone()]).await.expect_err("another session's handle");
    assert_eq!(foreign_handle, StatusCode::BadInvalidArgument);
    tl(&admin, close, vec![handle.clone()]).await.expect("close");
    assert_eq!(tl(&admin, close, vec![handle]).await.err(), Some(StatusCode::BadInvalidArgument), "closed twice");
    let writer = tl(&admin, open, vec![Variant::Byte(6)]).await.expect("open for writing")[0].clone();
    assert_eq!(
        tl(&admin, read, vec![writer.clone(), Variant::Int32(10)]).await.err(),
        Some(StatusCode::BadNotReadable),
        "reading a write handle"
    );
    let too_big = vec![0u8; 1024 * 1024 + 1];
    assert_eq!(
        tl(&admin, write, vec![writer.clone(), Variant::ByteString(ByteString::from(too_big))]).await.err(),
        Some(StatusCode::BadEncodingLimitsExceeded),
        "MaxTrustListSize"
    );
    tl(&admin, write, vec![writer.clone(), Variant::ByteString(ByteString::from(vec![0xff; 7]))]).await.expect("write");
    let update = M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_CloseAndUpdate;
    assert_eq!(tl(&admin, update, vec![writer]).await.err(), Some(StatusCode::BadDecodingError), "undecodable file");
    let trusted = admin.read_trust_list(None).await.expect("the trust list is unchanged and readable");
    assert!(trusted.trusted_certificates.unwrap_or_default().iter().any(|c| c.as_ref() == fx.client.certificate()));
    for s in [operator, signed_only, admin, other] {
        let _ = s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_list_decides_which_clients_get_in() {
    let fx = Fixture::start().await;
    let intruder = identity(fx.vaultd.generate_rsa("gds-intruder", 2048), "gds intruder", INTRUDER_URI);
    let try_intruder = || async {
        let options = fx.options(&intruder, INTRUDER_URI, SecurityMode::SignAndEncrypt, UserIdentity::Anonymous);
        let session = Session::connect(fx.server.endpoint_url(), options).await;
        let ok = session.is_ok();
        if let Ok(s) = session {
            let _ = s.close().await;
        }
        ok
    };
    assert!(!try_intruder().await, "the intruder is not trusted yet");
    let admin = fx.admin().await;
    let rejected = admin.get_rejected_list().await.expect("GetRejectedList");
    assert!(
        rejected.iter().any(|c| c.as_slice() == intruder.certificate()),
        "GetRejectedList lists the refused client"
    );

    let list = admin.read_trust_list(None).await.expect("read the trust list");
    assert_eq!(list.specified_lists, TrustListMasks::ALL.0);
    let mut trusted: Vec<ByteString> = list.trusted_certificates.clone().unwrap_or_default();
    assert!(trusted.iter().any(|c| c.as_ref() == fx.client.certificate()), "our client is in the trust list");
    trusted.push(ByteString::from(intruder.certificate().to_vec()));
    let update = TrustListDataType {
        specified_lists: TrustListMasks::TRUSTED_CERTIFICATES,
        trusted_certificates: Some(trusted),
        ..Default::default()
    };
    let apply = admin.write_trust_list(&update).await.expect("CloseAndUpdate");
    assert!(!apply, "trust changes take effect without ApplyChanges");
    assert!(try_intruder().await, "the updated trust list lets the intruder in");

    admin.remove_certificate(&thumbprint(intruder.certificate()), true).await.expect("RemoveCertificate");
    assert!(!try_intruder().await, "removed again");
    let missing = admin.remove_certificate(&thumbprint(intruder.certificate()), true).await.expect_err("gone");
    assert_eq!(status(missing), StatusCode::BadInvalidArgument);

    admin.add_certificate(intruder.certificate(), true).await.expect("AddCertificate");
    assert!(try_intruder().await, "added");

    // Only the trusted list named in the update changes: our client alone.
    let only_us = TrustListDataType {
        specified_lists: TrustListMasks::TRUSTED_CERTIFICATES,
        trusted_certificates: Some(vec![ByteString::from(fx.client.certificate().to_vec())]),
        ..Default::default()
    };
    admin.write_trust_list(&only_us).await.expect("CloseAndUpdate");
    assert!(!try_intruder().await, "replaced without the intruder");
    let now = admin.read_trust_list(Some(TrustListMasks(TrustListMasks::TRUSTED_CERTIFICATES))).await.expect("read");
    assert_eq!(now.trusted_certificates.unwrap_or_default().len(), 1);
    // Our own client still gets in (this session is proof, and a new one too).
    let _ = admin.close().await;
    let again = fx.admin().await;
    let bad = TrustListDataType {
        specified_lists: TrustListMasks::TRUSTED_CERTIFICATES,
        trusted_certificates: Some(vec![ByteString::from(b"not a certificate".to_vec())]),
        ..Default::default()
    };
    let refused = again.write_trust_list(&bad).await.expect_err("a bad entry");
    assert_eq!(status(refused), StatusCode::BadCertificateInvalid);
    let _ = again.close().await;
    let still = fx.admin().await;
    let _ = still.close().await;
}

/// machine-a's configuration switch: `[push] enabled = true` in the server's TOML file. A renewal with a new key
/// rewrites the certificate file, and a restart from the unchanged file serves the new certificate with the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_from_the_configuration_file_survives_a_restart() {
    init_tracing();
    let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let dir = tempfile::tempdir().expect("tempdir");
    let key = vaultd.generate_rsa("machine-a", 2048);
    let certificate = self_signed(&key, "machine-a", MACHINE_URI);
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
policies = ["Basic256Sha256"]
modes = ["SignAndEncrypt", "Sign"]
pki = "pki"

[users]
anonymous = false
file = "users.toml"

[push]
enabled = true
"#,
        vaultd.key_uri("machine-a")
    );
    let path = dir.path().join("machine-a.toml");
    std::fs::write(&path, config).expect("config");
    let load = || server_from_config(&path);
    let server = load().await.start().await.expect("machine-a starts with push");
    let client = identity(vaultd.generate_rsa("gds-client", 2048), "gds client", CLIENT_URI);
    let pki = certvault_opcua::pki::PkiStore::create_or_open(dir.path().join("pki")).expect("pki");
    pki.trust(client.certificate()).expect("trust the client");
    let connect = |server_certificate: Vec<u8>, url: String| {
        let client = client.clone();
        async move {
            let mut channel = ClientOptions::new(POLICY, SecurityMode::SignAndEncrypt);
            channel.identity = Some(client);
            channel.server_certificate = Some(server_certificate);
            let mut options = SessionOptions::new(channel);
            options.identity = UserIdentity::user_name(ADMIN, ADMIN_PASSWORD);
            options.application_uri = Some(CLIENT_URI.into());
            Session::connect(&url, options).await.expect("admin session")
        }
    };
    let admin = connect(certificate.clone(), server.endpoint_url().to_owned()).await;
    let request = admin.create_signing_request(true, None).await.expect("CSR with a new key");
    let ca = vaultd.generate_rsa("ca", 2048);
    let ca_cert = csr::self_signed_ca(ca.as_ref(), "CA", Duration::from_secs(86_400)).expect("CA");
    let renewed = csr::issue_from_csr(ca.as_ref(), &ca_cert, &request, Duration::from_secs(86_400)).expect("sign");
    admin.update_certificate(&renewed, std::slice::from_ref(&ca_cert)).await.expect("UpdateCertificate");
    admin.apply_changes().await.expect("ApplyChanges");
    let file = std::fs::read(dir.path().join("machine-a.der")).expect("certificate file");
    assert!(file.starts_with(&renewed), "the certificate file holds the new chain");
    let _ = admin.close().await;
    server.shutdown().await;

    let restarted = load().await.start().await.expect("machine-a restarts with the renewed certificate");
    assert_eq!(restarted.current_certificate(), Some(renewed.clone()), "the new certificate serves after a restart");
    let admin = connect(renewed, restarted.endpoint_url().to_owned()).await;
    admin.get_rejected_list().await.expect("push still works after the restart");
    let _ = admin.close().await;
    restarted.shutdown().await;
}

/// The server key on a PKCS#11 token (SoftHSM2): CreateSigningRequest makes the new key on the same token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_on_a_pkcs11_token() {
    // The only PKCS#11 user of this test binary (SOFTHSM2_CONF is read when the module first loads).
    let Some(softhsm) = SoftHsmToken::create("gds") else { return };
    let token = softhsm.token.clone();
    token.generate("machine-server", certvault::KeyAlgorithm::Rsa { bits: 2048 }, Default::default()).expect("key");
    let key: SharedKey = token.open_key(&KeySelector::Label("machine-server".into())).expect("key handle");
    let store: Arc<dyn KeyStore> = token.clone();
    let fx = Fixture::start_with(Some((key, store))).await;
    let admin = fx.admin().await;
    let before = token.list().expect("list").len();
    let request = admin.create_signing_request(true, None).await.expect("CreateSigningRequest");
    let keys = token.list().expect("list");
    assert_eq!(keys.len(), before + 1, "the new key is on the token");
    let new_key = keys.iter().find(|k| k.label.starts_with("machine-server.gds-")).expect("new label").clone();
    let (ca_key, ca_cert) = fx.ca();
    let certificate =
        csr::issue_from_csr(ca_key.as_ref(), &ca_cert, &request, Duration::from_secs(86_400)).expect("sign");
    assert_eq!(Cert::from_der(&certificate).expect("cert").spki(), new_key.spki_der.as_slice());
    admin.update_certificate(&certificate, std::slice::from_ref(&ca_cert)).await.expect("UpdateCertificate");
    admin.apply_changes().await.expect("ApplyChanges");
    admin.read_value(&fx.server.nodes.counter).await.expect("the session opened before reads on");
    assert_eq!(thumbprint(&fx.announced_certificate().await), thumbprint(&certificate));
    let fresh = Session::connect(
        fx.server.endpoint_url(),
        fx.options_to(
            &fx.client,
            CLIENT_URI,
            SecurityMode::SignAndEncrypt,
            UserIdentity::user_name(ADMIN, ADMIN_PASSWORD),
            certificate.clone(),
        ),
    )
    .await
    .expect("a new session to the token's new key");
    fresh.read_value(&fx.server.nodes.counter).await.expect("reads");
    let stored = token.cert_chain(&KeySelector::Id(new_key.id.clone())).expect("chain on the token");
    assert_eq!(stored.first(), Some(&certificate), "the certificate is stored beside the key on the token");
    for s in [admin, fresh] {
        let _ = s.close().await;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Interop: the push methods called by Python asyncua (tests/python/ua_peer.py), when $CERTVAULT_PYTHON is set.

/// A peer process, killed and reaped when the guard drops.
struct KillOnDrop(Arc<parking_lot::Mutex<std::process::Child>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let mut child = self.0.lock();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Runs `ua_peer.py ARGS` and returns its JSON line and exit code.
async fn run_peer(python: &std::path::Path, args: &[String]) -> (serde_json::Value, Option<i32>) {
    use std::io::Read as _;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/ua_peer.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("run ua_peer.py");
    let mut stdout = child.stdout.take().expect("stdout");
    let guard = KillOnDrop(Arc::new(parking_lot::Mutex::new(child)));
    let child = guard.0.clone();
    let finished = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let status = child.lock().wait();
        (status, out)
    });
    let (status, out) =
        tokio::time::timeout(Duration::from_secs(90), finished).await.expect("ua_peer.py in time").expect("join");
    drop(guard);
    let text = String::from_utf8_lossy(&out);
    let json = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("ua_peer.py printed no JSON ({e}): {text}"));
    (json, status.ok().and_then(|s| s.code()))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

fn id(method: MethodId) -> String {
    format!("i={}", method as u32)
}

fn object(object: ObjectId) -> String {
    format!("i={}", object as u32)
}

/// The bytes of a ByteString output in ua_peer.py's JSON ({"len", "sha256", "base64"}).
fn output_bytes(value: &serde_json::Value) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = value["base64"].as_str().unwrap_or_else(|| panic!("no base64 in {value}"));
    base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_calls_push_methods_interop() {
    let Some(python) = std::env::var_os("CERTVAULT_PYTHON").map(std::path::PathBuf::from) else {
        assert!(std::env::var_os("CI").is_none(), "CI is set but CERTVAULT_PYTHON is not: run scripts/test");
        eprintln!("SKIPPED: CERTVAULT_PYTHON is not set; scripts/test sets up the asyncua venv");
        return;
    };
    let fx = Fixture::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("utf-8").to_owned();
    let peer_uri = "urn:certvault:test:python-gds";
    let (gen, code) =
        run_peer(&python, &strings(&["gen-cert", "--out", &out, "--app-uri", peer_uri, "--name", "python gds"])).await;
    assert_eq!(code, Some(0), "{gen}");
    let (cert, key) = (gen["cert"].as_str().expect("cert").to_owned(), gen["key"].as_str().expect("key").to_owned());
    fx.server.pki.trust(&std::fs::read(&cert).expect("peer certificate")).expect("trust the peer");
    let server_cert = dir.path().join("server.der");
    std::fs::write(&server_cert, &fx.server.certificate).expect("server certificate");
    let session = |mode: &str, user: &str| -> Vec<String> {
        let mut args = strings(&["client-session", "--url", fx.server.endpoint_url(), "--policy", POLICY.name()]);
        args.extend(strings(&["--mode", mode, "--timeout", "20", "--deadline", "60", "--user", user]));
        args.extend(strings(&["--cert", &cert, "--key", &key, "--app-uri", peer_uri]));
        args.extend(strings(&["--server-cert", server_cert.to_str().expect("utf-8")]));
        args
    };
    let server_configuration = object(ObjectId::ServerConfiguration);
    let trust_list = object(ObjectId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList);
    let group = object(ObjectId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup);
    let rsa = format!("i={}", opcua_types::ObjectTypeId::RsaSha256ApplicationCertificateType as u32);
    let get_rejected = format!("{server_configuration}:{}", id(MethodId::ServerConfiguration_GetRejectedList));
    let csr = format!(
        "{server_configuration}:{}:{group}:NodeId,{rsa}:NodeId,:String,false:Boolean,:ByteString",
        id(MethodId::ServerConfiguration_CreateSigningRequest)
    );
    let open = format!(
        "{trust_list}:{}:15:UInt32",
        id(MethodId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_OpenWithMasks)
    );
    // The first handle of a fresh server is 1.
    let read = format!(
        "{trust_list}:{}:1:UInt32,1000000:Int32",
        id(MethodId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Read)
    );
    let close = format!(
        "{trust_list}:{}:1:UInt32",
        id(MethodId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Close)
    );

    let admin = format!("{ADMIN}:{ADMIN_PASSWORD}");
    let mut args = session("SignAndEncrypt", &admin);
    for call in [&get_rejected, &csr, &open, &read, &close] {
        args.extend(strings(&["--call", call]));
    }
    let (json, code) = run_peer(&python, &args).await;
    assert_eq!((json["ok"].as_bool(), code), (Some(true), Some(0)), "{json}");
    let results = json["results"].as_array().expect("results");
    let request = output_bytes(&results[1]["outputs"][0]);
    let (ca_key, ca_cert) = fx.ca();
    let issued = csr::issue_from_csr(ca_key.as_ref(), &ca_cert, &request, Duration::from_secs(3600)).expect("CSR");
    assert_eq!(
        Cert::from_der(&issued).expect("cert").spki(),
        Cert::from_der(&fx.server.certificate).expect("cert").spki(),
        "asyncua's CreateSigningRequest got a CSR of the server's vault key"
    );
    assert_eq!(results[2]["outputs"][0], 1, "OpenWithMasks handle");
    let content = output_bytes(&results[3]["outputs"][0]);
    let list = certvault_opcua::server::push::trust_list::decode_trust_list(&content).expect("TrustListDataType");
    let trusted = list.trusted_certificates.unwrap_or_default();
    assert!(trusted.iter().any(|c| c.as_ref() == fx.client.certificate()), "asyncua read the trust list");

    // Refusals as asyncua sees them.
    let operator = format!("{OPERATOR}:{OPERATOR_PASSWORD}");
    for (mode, user, expected) in [
        ("SignAndEncrypt", operator.as_str(), "BadUserAccessDenied"),
        ("Sign", admin.as_str(), "BadSecurityModeInsufficient"),
    ] {
        let mut args = session(mode, user);
        args.extend(strings(&["--call", &get_rejected, "--expect-failure", expected]));
        let (json, code) = run_peer(&python, &args).await;
        assert_eq!((json["expectation_met"].as_bool(), code), (Some(true), Some(0)), "{mode} {user}: {json}");
        assert_eq!(json["results"][0]["status"], expected, "{json}");
    }
}
