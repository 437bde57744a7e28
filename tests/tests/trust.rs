//! Certificate trust over real sockets: the server judges client certificates with its PKI store, the client judges
//! the server's. Each refused client gets the status code the specification puts on the wire (the ERR message its
//! channel receives), the server's refusal report carries the specific code, and the server keeps serving a
//! trusted client afterwards.

use std::sync::Arc;
use std::time::Duration;

use certvault::csr::{PublicOnly, RcgenKey};
use certvault::{KeyAlgorithm, SharedKey};
use certvault_opcua::channel::asymmetric::{open_layout, AsymmetricSecurityHeader, LocalIdentity, PeerCertificate};
use certvault_opcua::channel::chunk::{ChunkHeader, SequenceHeader};
use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::client::{Client, ClientOptions};
use certvault_opcua::pki::{limits_for, CertificateRefusal, PkiStore, Role, ValidationContext};
use certvault_opcua::service::BodyCodec;
use certvault_opcua::transport::uacp::{ChunkType, Limits, MessageType};
use certvault_opcua::Error;
use certvault_tests::{
    application_request, expect_error_and_close, identity, init_tracing, raw_connect, raw_hello, soft_key, PkiServer,
    TEST_SERVER_URI,
};
use opcua_types::{
    ByteString, DateTime, NodeId, ObjectId, OpenSecureChannelRequest, RequestHeader, SecurityTokenRequestType,
    StatusCode,
};
use rcgen::{CertificateRevocationListParams, Issuer, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber};
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

/// A test CA whose key is a vault key (a SoftKey behind the `VaultKey` trait), signing through `RcgenKey`.
struct TestCa {
    key: SharedKey,
    cert: Vec<u8>,
}

impl TestCa {
    fn new() -> TestCa {
        let key = soft_key(2048, "test-ca");
        let cert = certvault::csr::self_signed_ca(key.as_ref(), "certvault test CA", Duration::from_secs(86_400))
            .expect("CA certificate");
        TestCa { key, cert }
    }

    fn issuer(&self) -> Issuer<'_, RcgenKey<'_>> {
        let signer = RcgenKey::new(self.key.as_ref()).expect("CA signer");
        Issuer::from_ca_cert_der(&self.cert.as_slice().into(), signer).expect("issuer")
    }

    /// An application instance certificate for `spki`, valid from `not_before` to `not_after`.
    fn issue(
        &self,
        spki: &[u8],
        name: &str,
        serial: u64,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Vec<u8> {
        let subject = PublicOnly::from_spki(spki).expect("subject key");
        let alg = certvault::PublicKey::from_spki(spki).expect("key").algorithm();
        let mut params =
            application_request(name, &format!("urn:certvault:test:{name}")).to_params(alg).expect("params");
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_before = not_before;
        params.not_after = not_after;
        params.signed_by(&subject, &self.issuer()).expect("issue").der().to_vec()
    }

    /// A client identity whose certificate this CA issued.
    fn client(&self, name: &str, serial: u64) -> LocalIdentity {
        let key = soft_key(2048, name);
        let now = time::OffsetDateTime::now_utc();
        let cert = self.issue(
            &key.info().spki_der,
            name,
            serial,
            now - time::Duration::hours(1),
            now + time::Duration::days(1),
        );
        LocalIdentity::new(key, cert).expect("identity")
    }

    /// A CRL of this CA listing `serials`.
    fn crl(&self, serials: &[u64]) -> Vec<u8> {
        let now = time::OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::days(1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&s| RevokedCertParams {
                    serial_number: SerialNumber::from(s),
                    revocation_time: now - time::Duration::minutes(5),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer()).expect("CRL").der().to_vec()
    }
}

/// The server trusts `ca` and holds its CRL listing `revoked`.
fn trust_ca(server: &PkiServer, ca: &TestCa, revoked: &[u64]) {
    server.pki.trust(&ca.cert).expect("trust the CA");
    server.pki.add_crl(&ca.crl(revoked), true).expect("add the CRL");
}

/// Connects `identity`; returns the status of the Error message that refused it.
async fn refused_with(server: &PkiServer, identity: LocalIdentity) -> StatusCode {
    match server.connect(identity).await {
        Ok(()) => panic!("the client was accepted"),
        // The client's channel reports the server's Error message as a remote failure.
        Err(Error::Remote { status, .. }) => status,
        Err(other) => panic!("expected the server's Error message, got {other}"),
    }
}

async fn next_refusal(refusals: &mut broadcast::Receiver<CertificateRefusal>) -> CertificateRefusal {
    tokio::time::timeout(Duration::from_secs(10), refusals.recv()).await.expect("a refusal report").expect("report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_client_is_refused_kept_in_rejected_and_trusted_by_moving_the_file() {
    init_tracing();
    let server = PkiServer::start(Limits::default()).await;
    let mut refusals = server.certificate_refusals().expect("the PKI store reports refusals");
    let stranger = identity(soft_key(2048, "stranger"), "stranger", "urn:certvault:test:stranger");

    // Part 6 §6.7.6: the wire code does not reveal the trust list; the report has the specific one.
    assert_eq!(refused_with(&server, stranger.clone()).await, StatusCode::BadSecurityChecksFailed);
    let refusal = next_refusal(&mut refusals).await;
    assert_eq!(refusal.status, StatusCode::BadCertificateUntrusted);
    assert_eq!(refusal.wire_status, StatusCode::BadSecurityChecksFailed);
    assert!(refusal.copied_to_rejected);
    let rejected = server.rejected_files();
    assert_eq!(rejected.len(), 1, "the certificate waits in rejected/certs");
    assert_eq!(std::fs::read(&rejected[0]).expect("read"), stranger.certificate());
    server.assert_still_serving().await;

    // The operator trusts it with a file move; the same server, no restart, accepts the same client.
    let name = rejected[0].file_name().expect("file name");
    std::fs::rename(&rejected[0], server.pki.trusted_certs_dir().join(name)).expect("move to trusted/certs");
    server.connect(stranger).await.expect("the now trusted client connects");
    assert!(server.rejected_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_client_certificate_is_refused() {
    init_tracing();
    let server = PkiServer::start(Limits::default()).await;
    let mut refusals = server.certificate_refusals().expect("reports");
    let ca = TestCa::new();
    trust_ca(&server, &ca, &[]);
    let key = soft_key(2048, "expired");
    let now = time::OffsetDateTime::now_utc();
    let cert =
        ca.issue(&key.info().spki_der, "expired", 7, now - time::Duration::days(30), now - time::Duration::days(1));
    let expired = LocalIdentity::new(key, cert).expect("identity");

    // Not a trust-list question: the code passes through to the client (Part 4 §5.5.2.3 lists it for OPN).
    assert_eq!(refused_with(&server, expired).await, StatusCode::BadCertificateTimeInvalid);
    let refusal = next_refusal(&mut refusals).await;
    assert_eq!(refusal.status, StatusCode::BadCertificateTimeInvalid);
    assert!(!refusal.copied_to_rejected, "trusting an expired certificate would not help");
    assert!(server.rejected_files().is_empty());
    // A valid certificate of the same CA gets through.
    server.connect(ca.client("current", 8)).await.expect("a valid certificate of the CA");
    server.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_revoked_by_the_crl_of_a_trusted_ca_is_refused() {
    init_tracing();
    let server = PkiServer::start(Limits::default()).await;
    let mut refusals = server.certificate_refusals().expect("reports");
    let ca = TestCa::new();
    trust_ca(&server, &ca, &[0x0bad]);

    assert_eq!(refused_with(&server, ca.client("revoked", 0x0bad)).await, StatusCode::BadCertificateRevoked);
    let refusal = next_refusal(&mut refusals).await;
    assert_eq!(refusal.status, StatusCode::BadCertificateRevoked);
    assert!(server.rejected_files().is_empty(), "a revoked certificate is not offered for trust");
    // Its sibling, not on the list, gets through: the CRL is the only reason.
    server.connect(ca.client("sibling", 0x0900)).await.expect("a certificate of the CA that is not revoked");
    server.assert_still_serving().await;
}

/// Random bytes for the `rsa` crate's key generation, from aws-lc's generator.
struct AwsLcRng;

impl rsa::rand_core::TryRng for AwsLcRng {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        aws_lc_rs::rand::fill(dst).expect("system random");
        Ok(())
    }
}

impl rsa::rand_core::TryCryptoRng for AwsLcRng {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1024_bit_client_key_is_refused_under_basic256sha256() {
    use rsa::pkcs8::EncodePublicKey;
    use rsa::sha2::{Digest, Sha256};

    init_tracing();
    let server = PkiServer::start(Limits::default()).await;
    let ca = TestCa::new();
    trust_ca(&server, &ca, &[]);
    // aws-lc refuses to make a 1024-bit key, and our vault and channel refuse to sign with one: the key is made with
    // the `rsa` crate and the OpenSecureChannel is assembled here from the crate's public pieces.
    let weak = rsa::PrivateKey::new(&mut AwsLcRng, 1024).expect("1024-bit key");
    let spki = weak.to_public_key().to_public_key_der().expect("SPKI").as_bytes().to_vec();
    let now = time::OffsetDateTime::now_utc();
    let cert = ca.issue(&spki, "weak", 9, now - time::Duration::hours(1), now + time::Duration::days(1));

    // The store's verdict on this certificate, for the record.
    let ctx = ValidationContext::new(Role::Client, limits_for(SecurityPolicy::Basic256Sha256));
    let verdict = server.pki.evaluate(std::slice::from_ref(&cert), &ctx).expect_err("too short for the policy");
    assert_eq!(verdict.status_code(), StatusCode::BadCertificatePolicyCheckFailed);

    let policy = SecurityPolicy::Basic256Sha256;
    let receiver = PeerCertificate::from_der(&server.certificate).expect("server certificate");
    let request = OpenSecureChannelRequest {
        request_header: RequestHeader::new(&NodeId::null(), &DateTime::now(), 1),
        client_protocol_version: 0,
        request_type: SecurityTokenRequestType::Issue,
        security_mode: SecurityMode::SignAndEncrypt.to_wire(),
        client_nonce: ByteString::from(vec![7u8; policy.nonce_len()]),
        requested_lifetime: 60_000,
    };
    let body =
        BodyCodec::new().encode(ObjectId::OpenSecureChannelRequest_Encoding_DefaultBinary, &request).expect("body");
    let security = AsymmetricSecurityHeader {
        security_policy_uri: policy.uri().into(),
        sender_certificate: Some(cert.clone()),
        receiver_certificate_thumbprint: Some(receiver.thumbprint().to_vec()),
    };
    let layout =
        open_layout(policy, security.encoded_len(), KeyAlgorithm::Rsa { bits: 1024 }, KeyAlgorithm::Rsa { bits: 2048 })
            .expect("layout");
    let size = layout.chunk_len(body.len());
    let mut chunk = Vec::with_capacity(size);
    let header = ChunkHeader {
        message_type: MessageType::OpenSecureChannel,
        chunk_type: ChunkType::Final,
        message_size: size as u32,
        secure_channel_id: 0,
    };
    header.encode(&mut chunk);
    security.encode(&mut chunk);
    let encrypted_from = chunk.len();
    SequenceHeader { sequence_number: 1, request_id: 1 }.encode(&mut chunk);
    chunk.extend_from_slice(&body);
    layout.write_padding(&mut chunk, body.len());
    let signature =
        weak.sign(rsa::Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(&chunk)).expect("PKCS#1 v1.5 signature");
    chunk.extend_from_slice(&signature);
    let plain = chunk.split_off(encrypted_from);
    let blocks = layout.encryption.expect("encrypted");
    let enc = policy.asymmetric_encryption().expect("encryption");
    for block in plain.chunks(blocks.plain) {
        chunk.extend_from_slice(&receiver.public_key().encrypt(enc, block).expect("encrypt"));
    }
    assert_eq!(chunk.len(), size);

    let mut s = raw_connect(&server).await;
    raw_hello(&mut s, &server, Limits::default()).await;
    s.write_all(&chunk).await.expect("write OPN");
    // The channel checks the key length against the policy before trust (the length is in the certificate the
    // client sent, no secret of the server's), so this code reaches the client.
    expect_error_and_close(&mut s, StatusCode::BadCertificatePolicyCheckFailed).await;
    server.assert_still_serving().await;
}

/// Client options for the server's Basic256Sha256/SignAndEncrypt endpoint, with a client PKI store that trusts the
/// server's certificate.
fn client_options(server: &PkiServer, store: &Arc<PkiStore>) -> ClientOptions {
    let endpoint = server
        .endpoints()
        .iter()
        .find(|e| {
            e.security_policy_uri.as_ref() == SecurityPolicy::Basic256Sha256.uri()
                && e.security_mode == SecurityMode::SignAndEncrypt.to_wire()
        })
        .expect("endpoint");
    let mut options = ClientOptions::for_endpoint(endpoint).expect("options");
    options.identity = Some(server.good_client.clone());
    options.pki = Some(store.clone());
    options
}

fn client_store(server: &PkiServer) -> (tempfile::TempDir, Arc<PkiStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(PkiStore::create_or_open(dir.path()).expect("client pki"));
    store.trust(&server.certificate).expect("trust the server");
    (dir, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_refuses_a_server_whose_certificate_has_another_application_uri() {
    init_tracing();
    let server = PkiServer::start(Limits::default()).await;
    let (_dir, store) = client_store(&server);
    let mut options = client_options(&server, &store);
    assert_eq!(options.expected_application_uri.as_deref(), Some(TEST_SERVER_URI));
    // The endpoint description claims another application than the certificate names.
    options.expected_application_uri = Some("urn:certvault:test:impostor".into());
    let err = Client::connect_with(server.endpoint_url(), options).await.expect_err("refused");
    assert!(matches!(err, Error::CertificateRejected { .. }), "{err}");
    assert_eq!(err.status_code(), StatusCode::BadCertificateUriInvalid);
    assert!(err.to_string().contains("impostor"), "{err}");
    // With the endpoint's real ApplicationUri the same client connects.
    let client = Client::connect_with(server.endpoint_url(), client_options(&server, &store)).await.expect("connect");
    client.close().await.expect("close");
    server.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_refuses_a_server_certificate_without_the_host_it_connects_to() {
    init_tracing();
    let server = PkiServer::start(Limits::default()).await;
    let (_dir, store) = client_store(&server);
    // The certificate names localhost and 127.0.0.1; 127.0.0.2 is the same machine under another name. The client
    // checks before it opens a connection, so nothing reaches the server.
    let url = server.endpoint_url().replace("127.0.0.1", "127.0.0.2");
    let err = Client::connect_with(&url, client_options(&server, &store)).await.expect_err("refused");
    assert_eq!(err.status_code(), StatusCode::BadCertificateHostNameInvalid, "{err}");
    assert!(err.to_string().contains("127.0.0.2"), "{err}");
    // Under a name the certificate carries, the same client connects.
    let url = server.endpoint_url().replace("127.0.0.1", "localhost");
    let client = Client::connect_with(&url, client_options(&server, &store)).await.expect("connect via localhost");
    client.close().await.expect("close");
    server.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_refuses_an_untrusted_server_and_keeps_its_certificate_for_the_operator() {
    init_tracing();
    let server = PkiServer::start(Limits::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(PkiStore::create_or_open(dir.path()).expect("client pki"));
    let err = Client::connect_with(server.endpoint_url(), client_options(&server, &store)).await.expect_err("refused");
    // Nothing goes on a wire here: the client's error has the specific code.
    assert_eq!(err.status_code(), StatusCode::BadCertificateUntrusted, "{err}");
    let rejected: Vec<_> = std::fs::read_dir(store.rejected_certs_dir()).expect("rejected").flatten().collect();
    assert_eq!(rejected.len(), 1);
    std::fs::rename(rejected[0].path(), store.trusted_certs_dir().join(rejected[0].file_name())).expect("trust");
    let client = Client::connect_with(server.endpoint_url(), client_options(&server, &store)).await.expect("connect");
    client.close().await.expect("close");
}
