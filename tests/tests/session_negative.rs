//! Issue 4's "bad input" list at the session level, over real sockets: our server with its key (and an X.509 user's
//! key) in a real vaultd, hand-made CreateSession/ActivateSession/service requests over our channel-level
//! [`Client`], signed by vault keys through [`certvault_opcua::session::sign`] and then tampered with.
//!
//! Every case checks three things: the status code the specification names; that a witness session, active before
//! the bad input, still reads Server_ServerStatus_CurrentTime afterwards; and that the server's state is intact
//! (session count, the refused session or channel still usable where it should be).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use certvault::SharedKey;
use certvault_opcua::channel::asymmetric::{LocalIdentity, PeerCertificate};
use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::client::{
    Client, ClientOptions, MonitoredItemSpec, Session, SessionOptions, SubscriptionParams, SubscriptionSettings,
    UserIdentity,
};
use certvault_opcua::server::session::MAX_FAILED_ACTIVATIONS;
use certvault_opcua::server::user_token::{ANONYMOUS_POLICY_ID, USERNAME_POLICY_ID, X509_POLICY_ID};
use certvault_opcua::server::{ServerBuilder, SessionLimits, SubscriptionLimits};
use certvault_opcua::service::{BodyCodec, HasServiceResult};
use certvault_opcua::transport::uacp::Limits;
use certvault_tests::machine::{MachineServer, MACHINE_URI, OPERATOR, OPERATOR_PASSWORD};
use certvault_tests::{init_tracing, self_signed, Vaultd};
use futures_util::StreamExt;
use opcua_types::{
    ActivateSessionRequest, ActivateSessionResponse, AnonymousIdentityToken, ApplicationDescription, ApplicationType,
    BinaryDecodable, BinaryEncodable, BrowseDescription, ByteString, CloseSessionRequest, CloseSessionResponse,
    CreateSessionRequest, CreateSessionResponse, CreateSubscriptionRequest, CreateSubscriptionResponse, DataValue,
    DateTime, DeleteSubscriptionsRequest, DeleteSubscriptionsResponse, ExtensionObject, LocalizedText,
    MonitoredItemCreateRequest, MonitoringMode, MonitoringParameters, NodeId, ObjectId, PublishRequest,
    PublishResponse, ReadRequest, ReadResponse, ReadValueId, RequestHeader, ServiceFault, SignatureData, StatusCode,
    TimestampsToReturn, UAString, UserNameIdentityToken, VariableId, Variant, X509IdentityToken,
};

const POLICY: SecurityPolicy = SecurityPolicy::Basic256Sha256;
const MODE: SecurityMode = SecurityMode::SignAndEncrypt;
const CLIENT_URI: &str = "urn:certvault:test:negative-client";
/// The Blob's size: larger than the client message size of the BadResponseTooLarge case.
const BLOB: usize = 200_000;
/// Bound of every request: a missing answer fails the test instead of hanging it.
const STEP: Duration = Duration::from_secs(20);

/// A server with its keys in a vaultd, and a client application identity (key in the same vaultd) it trusts.
struct Fixture {
    server: MachineServer,
    app: LocalIdentity,
    // Dropped last: the server's key lives in it.
    vaultd: Vaultd,
}

impl Fixture {
    async fn start(customize: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Fixture {
        init_tracing();
        let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
        let server = MachineServer::start(&vaultd, BLOB, customize).await;
        let key = vaultd.generate_rsa("negative-client", 2048);
        let cert = self_signed(&key, "negative client", CLIENT_URI);
        server.pki.trust(&cert).expect("trust the client");
        let app = LocalIdentity::new(key, cert).expect("client identity");
        Fixture { server, app, vaultd }
    }

    fn channel_options(&self) -> ClientOptions {
        let mut options = ClientOptions::new(POLICY, MODE);
        options.identity = Some(self.app.clone());
        options.server_certificate = Some(self.server.certificate.clone());
        options.timeout = STEP;
        options
    }

    /// A bare secure channel for hand-made requests.
    async fn channel(&self) -> Client {
        Client::connect_with(self.server.endpoint_url(), self.channel_options()).await.expect("secure channel")
    }

    async fn session_with(&self, identity: UserIdentity, channel: ClientOptions) -> Session {
        let mut options = SessionOptions::new(channel);
        options.identity = identity;
        Session::connect(self.server.endpoint_url(), options).await.expect("session")
    }

    async fn session(&self, identity: UserIdentity) -> Session {
        self.session_with(identity, self.channel_options()).await
    }

    /// The session that must keep working whatever another client does.
    async fn witness(&self) -> Session {
        let witness = self.session(UserIdentity::Anonymous).await;
        assert_alive(&witness).await;
        witness
    }

    fn server_certificate(&self) -> Vec<u8> {
        self.server.certificate.clone()
    }

    fn sessions(&self) -> usize {
        self.server.session_count()
    }
}

async fn assert_alive(witness: &Session) {
    let value = tokio::time::timeout(STEP, witness.read_value(&VariableId::Server_ServerStatus_CurrentTime.into()))
        .await
        .expect("the witness is answered in time")
        .expect("the witness session still reads");
    assert!(matches!(value, Variant::DateTime(_)), "CurrentTime is a DateTime: {value:?}");
}

static HANDLE: AtomicU32 = AtomicU32::new(1);

fn header(token: &NodeId) -> RequestHeader {
    let mut header = RequestHeader::new(token, &DateTime::now(), HANDLE.fetch_add(1, Ordering::Relaxed));
    header.timeout_hint = STEP.as_millis() as u32;
    header
}

/// Sends `request` and decodes the answer: the response, or the status of a ServiceFault / bad ServiceResult.
/// No answer at all (a timeout, a closed channel) fails the test.
async fn call<Resp: BinaryDecodable + HasServiceResult>(
    client: &Client,
    request_id: ObjectId,
    request: &impl BinaryEncodable,
    response_id: ObjectId,
) -> Result<Resp, StatusCode> {
    let codec = BodyCodec::new();
    let body = codec.encode(request_id, request).expect("encode");
    let response = client.call(body).await.unwrap_or_else(|e| panic!("no answer to {request_id:?}: {e}"));
    codec.decode_response(response_id, &response).map_err(|e| match e {
        certvault_opcua::Error::Remote { status, .. } => status,
        other => panic!("undecodable answer to {request_id:?}: {other}"),
    })
}

/// Sends a raw body and returns the status of the ServiceFault that must answer it.
async fn fault_of(client: &Client, body: Vec<u8>) -> StatusCode {
    let response = client.call(body).await.expect("an answer, not a dropped request or a closed channel");
    let codec = BodyCodec::new();
    let (id, at) = codec.peek_id(&response).expect("a response type");
    assert_eq!(id, ObjectId::ServiceFault_Encoding_DefaultBinary, "a ServiceFault");
    let fault: ServiceFault = codec.decode_at(&response, at).expect("a ServiceFault");
    fault.response_header.service_result
}

/// A session made by hand: its token and the nonce the next ActivateSession signs.
struct RawSession {
    token: NodeId,
    nonce: Vec<u8>,
}

async fn create_raw(f: &Fixture, client: &Client) -> Result<RawSession, StatusCode> {
    let nonce = certvault_opcua::session::new_nonce().expect("nonce");
    let request = CreateSessionRequest {
        request_header: header(&NodeId::null()),
        client_description: ApplicationDescription {
            application_uri: CLIENT_URI.into(),
            product_uri: "urn:certvault:test".into(),
            application_name: LocalizedText::new("", "negative client"),
            application_type: ApplicationType::Client,
            gateway_server_uri: UAString::null(),
            discovery_profile_uri: UAString::null(),
            discovery_urls: None,
        },
        server_uri: MACHINE_URI.into(),
        endpoint_url: f.server.endpoint_url().into(),
        session_name: "hand-made".into(),
        client_nonce: ByteString::from(nonce.to_vec()),
        client_certificate: ByteString::from(f.app.certificate().to_vec()),
        requested_session_timeout: 60_000.0,
        max_response_message_size: 0,
    };
    let response: CreateSessionResponse = call(
        client,
        ObjectId::CreateSessionRequest_Encoding_DefaultBinary,
        &request,
        ObjectId::CreateSessionResponse_Encoding_DefaultBinary,
    )
    .await?;
    Ok(RawSession { token: response.authentication_token, nonce: response.server_nonce.value.unwrap_or_default() })
}

/// `key`'s signature over `certificate || nonce`, made in the vault (on a blocking thread: vaultd is another
/// process).
async fn sign(key: &SharedKey, certificate: Vec<u8>, nonce: &[u8]) -> SignatureData {
    let (key, nonce) = (key.clone(), nonce.to_vec());
    tokio::task::spawn_blocking(move || certvault_opcua::session::sign(key.as_ref(), POLICY, &certificate, &nonce))
        .await
        .expect("signing task")
        .expect("the vault signs")
}

fn flip_a_bit(mut signature: SignatureData) -> SignatureData {
    let bytes = signature.signature.value.as_mut().expect("a signature");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    signature
}

fn no_signature() -> SignatureData {
    SignatureData { algorithm: UAString::null(), signature: ByteString::null() }
}

fn anonymous() -> ExtensionObject {
    ExtensionObject::from_message(AnonymousIdentityToken { policy_id: ANONYMOUS_POLICY_ID.into() })
}

/// A UserNameIdentityToken with `password` encrypted for the server and bound to `nonce`.
fn password_token(f: &Fixture, user: &str, password: &str, nonce: &[u8]) -> ExtensionObject {
    let server = PeerCertificate::from_der(&f.server.certificate).expect("server certificate");
    let sealed = certvault_opcua::session::encrypt_secret(&server, POLICY, password.as_bytes(), nonce).expect("seal");
    ExtensionObject::from_message(UserNameIdentityToken {
        policy_id: USERNAME_POLICY_ID.into(),
        user_name: user.into(),
        password: sealed.data,
        encryption_algorithm: sealed.algorithm,
    })
}

fn x509_token(certificate: &[u8]) -> ExtensionObject {
    ExtensionObject::from_message(X509IdentityToken {
        policy_id: X509_POLICY_ID.into(),
        certificate_data: ByteString::from(certificate.to_vec()),
    })
}

/// ActivateSession; on success the session's next nonce is recorded.
async fn activate_raw(
    client: &Client,
    raw: &mut RawSession,
    client_signature: SignatureData,
    token: ExtensionObject,
    token_signature: SignatureData,
) -> Result<(), StatusCode> {
    let request = ActivateSessionRequest {
        request_header: header(&raw.token),
        client_signature,
        client_software_certificates: None,
        locale_ids: None,
        user_identity_token: token,
        user_token_signature: token_signature,
    };
    let response: ActivateSessionResponse = call(
        client,
        ObjectId::ActivateSessionRequest_Encoding_DefaultBinary,
        &request,
        ObjectId::ActivateSessionResponse_Encoding_DefaultBinary,
    )
    .await?;
    raw.nonce = response.server_nonce.value.unwrap_or_default();
    Ok(())
}

/// Creates and activates an anonymous session by hand.
async fn anonymous_raw(f: &Fixture, client: &Client) -> RawSession {
    let mut raw = create_raw(f, client).await.expect("CreateSession");
    let signature = sign(f.app.key(), f.server_certificate(), &raw.nonce).await;
    activate_raw(client, &mut raw, signature, anonymous(), no_signature()).await.expect("ActivateSession");
    raw
}

fn read_request(token: &NodeId, nodes: Vec<ReadValueId>) -> ReadRequest {
    ReadRequest {
        request_header: header(token),
        max_age: 0.0,
        timestamps_to_return: TimestampsToReturn::Neither,
        nodes_to_read: Some(nodes),
    }
}

fn current_time() -> ReadValueId {
    ReadValueId::from(NodeId::from(VariableId::Server_ServerStatus_CurrentTime))
}

async fn read_raw(client: &Client, token: &NodeId) -> Result<DataValue, StatusCode> {
    let response: ReadResponse = call(
        client,
        ObjectId::ReadRequest_Encoding_DefaultBinary,
        &read_request(token, vec![current_time()]),
        ObjectId::ReadResponse_Encoding_DefaultBinary,
    )
    .await?;
    Ok(response.results.unwrap_or_default().pop().expect("one result"))
}

async fn close_raw(client: &Client, raw: &RawSession) -> Result<(), StatusCode> {
    let request = CloseSessionRequest { request_header: header(&raw.token), delete_subscriptions: true };
    let _: CloseSessionResponse = call(
        client,
        ObjectId::CloseSessionRequest_Encoding_DefaultBinary,
        &request,
        ObjectId::CloseSessionResponse_Encoding_DefaultBinary,
    )
    .await?;
    Ok(())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_and_unknown_users_are_denied_alike() {
    let f = Fixture::start(|b| b).await;
    let witness = f.witness().await;
    let client = f.channel().await;
    let mut raw = create_raw(&f, &client).await.expect("CreateSession");
    assert_eq!(f.sessions(), 2);
    let signature = sign(f.app.key(), f.server_certificate(), &raw.nonce).await;

    let wrong = password_token(&f, OPERATOR, "not-the-password", &raw.nonce);
    let unknown = password_token(&f, "nobody", OPERATOR_PASSWORD, &raw.nonce);
    for (what, token) in [("a wrong password", &wrong), ("an unknown user", &unknown)] {
        let refused = activate_raw(&client, &mut raw, signature.clone(), token.clone(), no_signature()).await;
        assert_eq!(refused, Err(StatusCode::BadUserAccessDenied), "{what}");
        assert_alive(&witness).await;
    }

    // Timing: the standard forbids asserting on it (users::tests proves both paths run one Argon2id verification
    // of the same cost); measured over the socket and printed here.
    // A session is closed after MAX_FAILED_ACTIVATIONS refusals, so each round uses a session of its own.
    let (mut wrong_times, mut unknown_times) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let mut probe = create_raw(&f, &client).await.expect("CreateSession");
        let probe_signature = sign(f.app.key(), f.server_certificate(), &probe.nonce).await;
        let wrong = password_token(&f, OPERATOR, "not-the-password", &probe.nonce);
        let unknown = password_token(&f, "nobody", OPERATOR_PASSWORD, &probe.nonce);
        for (token, times) in [(&wrong, &mut wrong_times), (&unknown, &mut unknown_times)] {
            let start = Instant::now();
            let refused =
                activate_raw(&client, &mut probe, probe_signature.clone(), token.clone(), no_signature()).await;
            times.push(start.elapsed());
            assert_eq!(refused, Err(StatusCode::BadUserAccessDenied));
        }
        close_raw(&client, &probe).await.expect("CloseSession of an unactivated session");
    }
    println!(
        "ActivateSession refusal over the socket, median of 20: wrong password {:?}, unknown user {:?}",
        median(wrong_times),
        median(unknown_times)
    );

    // A guesser gets a few attempts per session: the last allowed refusal closes the session.
    let mut guesser = create_raw(&f, &client).await.expect("CreateSession");
    let guesser_signature = sign(f.app.key(), f.server_certificate(), &guesser.nonce).await;
    let guess = password_token(&f, OPERATOR, "guess", &guesser.nonce);
    for _ in 0..MAX_FAILED_ACTIVATIONS {
        let refused =
            activate_raw(&client, &mut guesser, guesser_signature.clone(), guess.clone(), no_signature()).await;
        assert_eq!(refused, Err(StatusCode::BadUserAccessDenied));
    }
    assert_eq!(f.sessions(), 2, "the guesser's session is gone");
    let right = password_token(&f, OPERATOR, OPERATOR_PASSWORD, &guesser.nonce);
    let refused = activate_raw(&client, &mut guesser, guesser_signature, right, no_signature()).await;
    assert_eq!(refused, Err(StatusCode::BadSessionIdInvalid), "not even the right password revives it");

    // The refusals changed nothing: the session is still there, and the right password activates it.
    assert_eq!(f.sessions(), 2);
    assert_eq!(read_raw(&client, &raw.token).await, Err(StatusCode::BadSessionNotActivated));
    let right = password_token(&f, OPERATOR, OPERATOR_PASSWORD, &raw.nonce);
    activate_raw(&client, &mut raw, signature, right.clone(), no_signature()).await.expect("the right password");
    read_raw(&client, &raw.token).await.expect("the activated session reads");

    // The same token again: it is bound to the nonce the server has since replaced (a replayed password).
    let signature = sign(f.app.key(), f.server_certificate(), &raw.nonce).await;
    let replayed = activate_raw(&client, &mut raw, signature.clone(), right, no_signature()).await;
    assert_eq!(replayed, Err(StatusCode::BadIdentityTokenInvalid), "a password encrypted for an old nonce");
    // And encrypted for a nonce the server never issued.
    let other = password_token(&f, OPERATOR, OPERATOR_PASSWORD, &[0x5a; 32]);
    let refused = activate_raw(&client, &mut raw, signature.clone(), other, no_signature()).await;
    assert_eq!(refused, Err(StatusCode::BadIdentityTokenInvalid), "a password encrypted for another nonce");
    assert_alive(&witness).await;
    // The session keeps its activation and can still be re-activated properly.
    read_raw(&client, &raw.token).await.expect("still activated");
    let right = password_token(&f, OPERATOR, OPERATOR_PASSWORD, &raw.nonce);
    activate_raw(&client, &mut raw, signature, right, no_signature()).await.expect("re-activation");
    close_raw(&client, &raw).await.expect("CloseSession");
    assert_eq!(f.sessions(), 1);
    assert_alive(&witness).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_signatures_and_untrusted_user_certificates_are_refused() {
    let f = Fixture::start(|b| b).await;
    let witness = f.witness().await;
    let client = f.channel().await;
    let mut raw = create_raw(&f, &client).await.expect("CreateSession");
    let server_cert = f.server_certificate();
    let signature = sign(f.app.key(), server_cert.clone(), &raw.nonce).await;

    // clientSignature with one bit flipped.
    let refused = activate_raw(&client, &mut raw, flip_a_bit(signature.clone()), anonymous(), no_signature()).await;
    assert_eq!(refused, Err(StatusCode::BadApplicationSignatureInvalid));
    assert_alive(&witness).await;
    // clientSignature by the right key over another nonce.
    let stale = sign(f.app.key(), server_cert.clone(), &[0x11; 32]).await;
    let refused = activate_raw(&client, &mut raw, stale, anonymous(), no_signature()).await;
    assert_eq!(refused, Err(StatusCode::BadApplicationSignatureInvalid));

    // userTokenSignature of an X.509 token with one bit flipped (Part 4 Table 18: BadUserSignatureInvalid).
    let user = &f.server.cert_user;
    let user_signature = sign(user.key(), server_cert.clone(), &raw.nonce).await;
    let refused = activate_raw(
        &client,
        &mut raw,
        signature.clone(),
        x509_token(user.certificate()),
        flip_a_bit(user_signature.clone()),
    )
    .await;
    assert_eq!(refused, Err(StatusCode::BadUserSignatureInvalid));
    assert_alive(&witness).await;

    // A user certificate the user trust list does not hold, with a valid signature by its (vault) key.
    let stranger_key = f.vaultd.generate_rsa("stranger", 2048);
    let stranger_cert = self_signed(&stranger_key, "Stranger", "urn:certvault:test:stranger");
    let stranger_signature = sign(&stranger_key, server_cert.clone(), &raw.nonce).await;
    let refused =
        activate_raw(&client, &mut raw, signature.clone(), x509_token(&stranger_cert), stranger_signature).await;
    assert_eq!(refused, Err(StatusCode::BadIdentityTokenRejected));
    assert_alive(&witness).await;

    // Nothing was corrupted: the same session activates with the genuine signatures.
    assert_eq!(f.sessions(), 2);
    activate_raw(&client, &mut raw, signature, x509_token(user.certificate()), user_signature)
        .await
        .expect("the genuine X.509 user");
    read_raw(&client, &raw.token).await.expect("the activated session reads");
    close_raw(&client, &raw).await.expect("CloseSession");
    assert_eq!(f.sessions(), 1);
    assert_alive(&witness).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_to_another_channel_only_by_reactivation() {
    let f = Fixture::start(|b| b).await;
    let witness = f.witness().await;
    let first = f.channel().await;
    let mut raw = anonymous_raw(&f, &first).await;
    let second = f.channel().await;
    assert_ne!(first.channel_state().secure_channel_id, second.channel_state().secure_channel_id);

    assert_eq!(read_raw(&second, &raw.token).await, Err(StatusCode::BadSecureChannelIdInvalid));
    assert_alive(&witness).await;
    // The refusal did not move or break the session.
    read_raw(&first, &raw.token).await.expect("still usable on its own channel");

    let signature = sign(f.app.key(), f.server_certificate(), &raw.nonce).await;
    activate_raw(&second, &mut raw, signature, anonymous(), no_signature()).await.expect("re-activation");
    read_raw(&second, &raw.token).await.expect("usable on the new channel");
    assert_eq!(read_raw(&first, &raw.token).await, Err(StatusCode::BadSecureChannelIdInvalid));
    assert_eq!(f.sessions(), 2);
    // The old channel cannot close it either; the new one can.
    assert_eq!(close_raw(&first, &raw).await, Err(StatusCode::BadSecureChannelIdInvalid));
    close_raw(&second, &raw).await.expect("CloseSession on the new channel");
    assert_eq!(f.sessions(), 1);
    assert_alive(&witness).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_sessions() {
    let limits = SessionLimits { max_sessions: 3, ..SessionLimits::default() };
    let f = Fixture::start(|b| b.session_limits(limits)).await;
    let witness = f.witness().await;
    let client = f.channel().await;
    let a = anonymous_raw(&f, &client).await;
    let b = create_raw(&f, &client).await.expect("the third session");
    assert_eq!(f.sessions(), 3);
    assert_eq!(create_raw(&f, &client).await.err(), Some(StatusCode::BadTooManySessions));
    assert_eq!(f.sessions(), 3);
    assert_alive(&witness).await;
    read_raw(&client, &a.token).await.expect("the other sessions are untouched");
    // A place freed is a place to take.
    close_raw(&client, &b).await.expect("close");
    assert_eq!(f.sessions(), 2);
    let c = create_raw(&f, &client).await.expect("a session again");
    close_raw(&client, &c).await.expect("close");
    close_raw(&client, &a).await.expect("close");
    assert_eq!(f.sessions(), 1);
    assert_alive(&witness).await;
}

fn subscription_request(token: &NodeId, interval_ms: f64) -> CreateSubscriptionRequest {
    CreateSubscriptionRequest {
        request_header: header(token),
        requested_publishing_interval: interval_ms,
        requested_lifetime_count: 300,
        requested_max_keep_alive_count: 100,
        max_notifications_per_publish: 0,
        publishing_enabled: true,
        priority: 0,
    }
}

fn item(node: NodeId, handle: u32) -> MonitoredItemCreateRequest {
    MonitoredItemCreateRequest {
        item_to_monitor: ReadValueId::from(node),
        monitoring_mode: MonitoringMode::Reporting,
        requested_parameters: MonitoringParameters {
            client_handle: handle,
            sampling_interval: 100.0,
            filter: ExtensionObject::null(),
            queue_size: 1,
            discard_oldest: true,
        },
    }
}

/// Polls `future` once, so it sends its request now, in this order.
async fn start<F: Future + Unpin>(future: &mut F) {
    std::future::poll_fn(|cx| {
        let _ = Pin::new(&mut *future).poll(cx);
        Poll::Ready(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_limits_and_publish_floods() {
    let limits = SubscriptionLimits {
        max_subscriptions_per_session: 2,
        max_monitored_items_per_subscription: 2,
        max_publish_requests_per_session: 3,
        ..SubscriptionLimits::default()
    };
    let f = Fixture::start(|b| b.subscription_limits(limits)).await;
    let witness = f.witness().await;
    let session = f.session(UserIdentity::Anonymous).await;
    let settings = SubscriptionSettings::default();

    // Subscriptions per session.
    let first = session.create_subscription(&settings, true).await.expect("first subscription");
    let second = session.create_subscription(&settings, true).await.expect("second subscription");
    let third = session.create_subscription(&settings, true).await.map(|_| ()).map_err(|e| e.status_code());
    assert_eq!(third, Err(StatusCode::BadTooManySubscriptions));
    assert_alive(&witness).await;
    // Another session's limit is its own.
    witness.create_subscription(&settings, true).await.expect("the witness subscribes");

    // Monitored items per subscription.
    let nodes = [f.server.nodes.counter.clone(), f.server.nodes.setpoint.clone(), current_time().node_id];
    let items = nodes.iter().enumerate().map(|(i, n)| item(n.clone(), i as u32)).collect();
    let results = session
        .create_monitored_items(first.subscription_id, TimestampsToReturn::Neither, items)
        .await
        .expect("CreateMonitoredItems");
    let statuses: Vec<_> = results.iter().map(|r| r.status_code).collect();
    assert_eq!(statuses, [StatusCode::Good, StatusCode::Good, StatusCode::BadTooManyMonitoredItems]);
    assert_alive(&witness).await;
    // Deleting one subscription makes room for another.
    let deleted = session.delete_subscriptions(vec![second.subscription_id]).await.expect("delete");
    assert_eq!(deleted, [StatusCode::Good]);
    session.create_subscription(&settings, true).await.expect("room again");

    // A Publish flood on a hand-made session: 5 requests against a limit of 3. The subscription's first cycle is a
    // minute away, so nothing answers them but the limit.
    let client = f.channel().await;
    let raw = anonymous_raw(&f, &client).await;
    let created: CreateSubscriptionResponse = call(
        &client,
        ObjectId::CreateSubscriptionRequest_Encoding_DefaultBinary,
        &subscription_request(&raw.token, 60_000.0),
        ObjectId::CreateSubscriptionResponse_Encoding_DefaultBinary,
    )
    .await
    .expect("CreateSubscription");
    let publish = || {
        let request = PublishRequest { request_header: header(&raw.token), subscription_acknowledgements: None };
        let client = &client;
        Box::pin(async move {
            call::<PublishResponse>(
                client,
                ObjectId::PublishRequest_Encoding_DefaultBinary,
                &request,
                ObjectId::PublishResponse_Encoding_DefaultBinary,
            )
            .await
        })
    };
    let mut flood: Vec<_> = (0..5).map(|_| publish()).collect();
    for request in &mut flood {
        start(request).await;
    }
    let mut flood = flood.into_iter();
    for oldest in flood.by_ref().take(2) {
        assert_eq!(
            tokio::time::timeout(STEP, oldest).await.expect("answered at once").err(),
            Some(StatusCode::BadTooManyPublishRequests)
        );
    }
    assert_alive(&witness).await;
    read_raw(&client, &raw.token).await.expect("the flooding session itself is served");
    // The three kept requests are still queued: deleting the subscription answers them (BadNoSubscription).
    let delete = DeleteSubscriptionsRequest {
        request_header: header(&raw.token),
        subscription_ids: Some(vec![created.subscription_id]),
    };
    let _: DeleteSubscriptionsResponse = call(
        &client,
        ObjectId::DeleteSubscriptionsRequest_Encoding_DefaultBinary,
        &delete,
        ObjectId::DeleteSubscriptionsResponse_Encoding_DefaultBinary,
    )
    .await
    .expect("DeleteSubscriptions");
    for kept in flood {
        assert_eq!(
            tokio::time::timeout(STEP, kept).await.expect("answered").err(),
            Some(StatusCode::BadNoSubscription)
        );
    }

    // Other sessions' subscriptions still deliver.
    let mut stream = witness
        .subscribe(
            SubscriptionParams { publishing_interval: Duration::from_millis(100), ..SubscriptionParams::default() },
            vec![MonitoredItemSpec::value(f.server.nodes.counter.clone())],
        )
        .await
        .expect("the witness subscribes");
    let change = tokio::time::timeout(STEP, stream.next()).await.expect("a data change in time");
    assert!(change.is_some(), "the witness subscription delivers");
    drop(stream);
    close_raw(&client, &raw).await.expect("close");
    assert_eq!(f.sessions(), 2);
    assert_alive(&witness).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operation_limits_and_responses_too_large() {
    let f = Fixture::start(|b| b).await;
    let witness = f.witness().await;
    // AddressSpaceLimits::default(): 1000 nodes per Read and per Browse.
    let many = vec![current_time(); 1001];
    let refused = witness.read(many, TimestampsToReturn::Neither, 0.0).await.map_err(|e| e.status_code());
    assert_eq!(refused.err(), Some(StatusCode::BadTooManyOperations));
    let browse = BrowseDescription { node_id: ObjectId::ObjectsFolder.into(), ..BrowseDescription::default() };
    let refused = witness.browse(vec![browse; 1001], 0, None).await.map_err(|e| e.status_code());
    assert_eq!(refused.err(), Some(StatusCode::BadTooManyOperations));
    assert_alive(&witness).await;
    assert_eq!(witness.read(vec![current_time(); 1000], TimestampsToReturn::Neither, 0.0).await.unwrap().len(), 1000);

    // A client that accepts messages of 64 KiB reads the 200 kB Blob: the server must say BadResponseTooLarge
    // (Part 6 §6.7.2: a ServiceFault when the response is too large), not drop the answer.
    let mut small = f.channel_options();
    small.limits = Limits { max_message_size: 64 * 1024, ..Limits::default() };
    small.timeout = Duration::from_secs(10);
    let session = f.session_with(UserIdentity::Anonymous, small).await;
    let blob = ReadValueId::from(f.server.nodes.blob.clone());
    let refused = session.read(vec![blob], TimestampsToReturn::Neither, 0.0).await.map_err(|e| e.status_code());
    assert_eq!(refused.err(), Some(StatusCode::BadResponseTooLarge));
    assert_alive(&session).await;

    // The same through CreateSession's maxResponseMessageSize, on a channel that would carry the Blob.
    let mut options = SessionOptions::new(f.channel_options());
    options.max_response_message_size = 64 * 1024;
    let limited = Session::connect(f.server.endpoint_url(), options).await.expect("session");
    let blob = ReadValueId::from(f.server.nodes.blob.clone());
    let refused = limited.read(vec![blob], TimestampsToReturn::Neither, 0.0).await.map_err(|e| e.status_code());
    assert_eq!(refused.err(), Some(StatusCode::BadResponseTooLarge));
    assert_alive(&limited).await;
    let blob = ReadValueId::from(f.server.nodes.blob.clone());
    assert!(witness.read(vec![blob], TimestampsToReturn::Neither, 0.0).await.is_ok(), "no limit, no refusal");
    assert_alive(&witness).await;
    assert_eq!(f.sessions(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bodies_inside_valid_messages() {
    let f = Fixture::start(|b| b).await;
    let witness = f.witness().await;
    let client = f.channel().await;
    let raw = anonymous_raw(&f, &client).await;
    let codec = BodyCodec::new();
    let read = |token: &NodeId| {
        codec.encode(ObjectId::ReadRequest_Encoding_DefaultBinary, &read_request(token, vec![current_time()])).unwrap()
    };
    let ctx = opcua_types::ContextOwned::default();
    let with_header = |id: NodeId, token: &NodeId| {
        let mut body = Vec::new();
        id.encode(&mut body, &ctx.context()).unwrap();
        header(token).encode(&mut body, &ctx.context()).unwrap();
        body
    };
    let mut truncated = read(&raw.token);
    truncated.truncate(truncated.len() - 6);
    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        ("not even a NodeId", vec![0xff, 0xff], StatusCode::BadDecodingError),
        ("a truncated Read", truncated, StatusCode::BadDecodingError),
        ("an unknown type id", with_header(NodeId::new(0, 99_999u32), &raw.token), StatusCode::BadServiceUnsupported),
        (
            "a type id of another namespace",
            with_header(NodeId::new(3, "Foo"), &raw.token),
            StatusCode::BadServiceUnsupported,
        ),
        (
            "a response where a request belongs",
            with_header(ObjectId::ReadResponse_Encoding_DefaultBinary.into(), &raw.token),
            StatusCode::BadServiceUnsupported,
        ),
        ("a Read without a session", read(&NodeId::null()), StatusCode::BadSessionIdInvalid),
        (
            "a Read with a made-up authentication token",
            read(&NodeId::new(0, ByteString::from(vec![0x42; 32]))),
            StatusCode::BadSessionIdInvalid,
        ),
    ];
    for (what, body, expected) in cases {
        assert_eq!(fault_of(&client, body).await, expected, "{what}");
        // The channel stays usable, for the session and for discovery.
        read_raw(&client, &raw.token).await.unwrap_or_else(|s| panic!("after {what}: {s}"));
        assert!(!client.get_endpoints().await.expect("GetEndpoints").is_empty());
        assert_alive(&witness).await;
    }
    assert_eq!(f.sessions(), 2);
    close_raw(&client, &raw).await.expect("close");
    assert_eq!(f.sessions(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_and_calling_need_the_operator_role() {
    let f = Fixture::start(|b| b).await;
    let witness = f.witness().await;
    let nodes = f.server.nodes.clone();
    let args = || vec![Variant::Double(1.5), Variant::Double(2.0)];

    let refused = witness.write_value(&nodes.setpoint, 7.5f64).await.map_err(|e| e.status_code());
    assert_eq!(refused, Err(StatusCode::BadUserAccessDenied), "Write as anonymous");
    let refused = witness.call_method(&nodes.machine, &nodes.add, args()).await.map_err(|e| e.status_code());
    assert_eq!(refused.err(), Some(StatusCode::BadUserAccessDenied), "Call as anonymous");
    assert_alive(&witness).await;
    assert_eq!(witness.read_value(&nodes.setpoint).await.expect("read"), Variant::Double(0.0), "nothing written");

    let operator = f.session(UserIdentity::user_name(OPERATOR, OPERATOR_PASSWORD)).await;
    operator.write_value(&nodes.setpoint, 7.5f64).await.expect("Write as operator");
    let sum = operator.call_method(&nodes.machine, &nodes.add, args()).await.expect("Call as operator");
    assert_eq!(sum, [Variant::Double(3.5)]);
    let user = &f.server.cert_user;
    let x509 = f.session(UserIdentity::x509(user.certificate().to_vec(), user.key().clone())).await;
    x509.write_value(&nodes.setpoint, 8.5f64).await.expect("Write as the X.509 operator");
    assert_eq!(witness.read_value(&nodes.setpoint).await.expect("read"), Variant::Double(8.5));
    assert_eq!(f.sessions(), 3);
    operator.close().await.expect("close");
    x509.close().await.expect("close");
    assert_eq!(f.sessions(), 1);
    assert_alive(&witness).await;
}
