//! The server's request router: discovery without a session, the session services, and every other service on an
//! activated session bound to the requesting channel.
//!
//! Requests that call the vault (CreateSession's serverSignature, ActivateSession's password decryption) or are
//! slow on purpose (Argon2id) are answered by a [`Reply::Later`] that runs them on a blocking thread, so the
//! connection keeps serving its other requests and no async worker waits on the vault.

use std::sync::Arc;

use opcua_types::{
    ActivateSessionRequest, ActivateSessionResponse, BinaryEncodable, ByteString, CancelRequest, CancelResponse,
    CloseSessionRequest, CloseSessionResponse, CreateSessionRequest, CreateSessionResponse, ObjectId, RequestHeader,
    ResponseHeader, ServiceFault, SignatureData, StatusCode, UAString,
};
use parking_lot::{Mutex, RwLock};

use super::access::RequestContext;
use super::discovery::Discovery;
use super::identity_slot::IdentitySlot;
use super::session::SessionManager;
use super::user_token::Authenticator;
use crate::channel::asymmetric::LocalIdentity;
use crate::channel::secure_channel::Now;
use crate::pki::Cert;
use crate::service::BodyCodec;
use crate::transport::tcp::{ChannelInfo, Reply, ServiceHandler};

/// The services that need an activated session (Read, Write, Browse, Call, subscriptions...).
pub trait SessionServices: std::fmt::Debug + Send + Sync + 'static {
    /// Answers one request of type `id` (the body's structure starts at `at`) for the session in `ctx`.
    fn handle(&self, id: ObjectId, body: Vec<u8>, at: usize, ctx: RequestContext, channel: &ChannelInfo) -> Reply;

    /// A session ended (closed or timed out); `delete_subscriptions` as CloseSession asked, true on timeout.
    fn session_closed(&self, _session_id: &opcua_types::NodeId, _delete_subscriptions: bool) {}

    /// A channel ended: requests queued on it (Publish) will never be answered.
    fn channel_closed(&self, _secure_channel_id: u32) {}
}

/// Answers every request with BadServiceUnsupported: a server with sessions but no address space.
#[derive(Debug, Default)]
pub struct NoSessionServices;

impl SessionServices for NoSessionServices {
    fn handle(&self, _: ObjectId, body: Vec<u8>, at: usize, ctx: RequestContext, _: &ChannelInfo) -> Reply {
        let codec = BodyCodec::shared();
        let header = codec.decode_at::<RequestHeader>(&body, at).ok();
        Reply::Ready(fault(
            codec,
            header.as_ref().map_or(0, |h| h.request_handle),
            StatusCode::BadServiceUnsupported,
            ctx.now,
        ))
    }
}

struct Inner {
    /// Rebuilt when the server certificate changes, so GetEndpoints shows the certificate new channels use.
    discovery: RwLock<Arc<Discovery>>,
    sessions: Mutex<SessionManager>,
    authenticator: Authenticator,
    identity: IdentitySlot,
    services: Arc<dyn SessionServices>,
    max_message_size: u32,
    /// Whether policy None is an endpoint; otherwise a None channel serves discovery only.
    none_offered: bool,
}

/// Routes requests to discovery, the session manager and the session services.
#[derive(Clone)]
pub struct Services {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").field("sessions", &self.inner.sessions.lock().len()).finish_non_exhaustive()
    }
}

/// Replaces a response larger than the session's maxResponseMessageSize (0 = no limit) by a BadResponseTooLarge
/// fault (Part 4 §5.6.2): the client said it cannot take more, and the channel limit may be larger.
fn within_response_limit(reply: Reply, limit: u32, handle: u32, now: Now) -> Reply {
    let check = move |body: Vec<u8>| {
        if limit == 0 || body.len() <= limit as usize {
            return body;
        }
        tracing::debug!(len = body.len(), limit, "response over the session's maxResponseMessageSize");
        fault(BodyCodec::shared(), handle, StatusCode::BadResponseTooLarge, now)
    };
    match reply {
        Reply::Ready(body) => Reply::Ready(check(body)),
        Reply::Later(later) if limit != 0 => Reply::Later(Box::pin(async move { check(later.await) })),
        later => later,
    }
}

/// A ServiceFault for the request with `handle`.
pub fn fault(codec: &BodyCodec, handle: u32, status: StatusCode, now: Now) -> Vec<u8> {
    let fault =
        ServiceFault { response_header: ResponseHeader::new_timestamped_service_result(now.utc, handle, status) };
    // A ServiceFault of a ResponseHeader always encodes; an empty body would only make the client time out.
    codec.encode(ObjectId::ServiceFault_Encoding_DefaultBinary, &fault).unwrap_or_default()
}

/// Encodes `response`, or a fault with the encoding error's status when it does not encode.
pub fn encode_or_fault<T: BinaryEncodable>(
    codec: &BodyCodec,
    id: ObjectId,
    response: &T,
    handle: u32,
    now: Now,
) -> Vec<u8> {
    codec.encode(id, response).unwrap_or_else(|e| {
        tracing::warn!(error = %e, ?id, "response does not encode");
        fault(codec, handle, e.status_code(), now)
    })
}

impl Services {
    /// A router over `discovery` and `sessions`, with user tokens checked by `authenticator`.
    pub fn new(
        discovery: Discovery,
        sessions: SessionManager,
        authenticator: Authenticator,
        identity: Option<LocalIdentity>,
        services: Arc<dyn SessionServices>,
        max_message_size: u32,
        none_offered: bool,
    ) -> Self {
        Services {
            inner: Arc::new(Inner {
                discovery: RwLock::new(Arc::new(discovery)),
                sessions: Mutex::new(sessions),
                authenticator,
                identity: IdentitySlot::new(identity),
                services,
                max_message_size,
                none_offered,
            }),
        }
    }

    /// The server identity new channels and sessions use.
    pub fn identity(&self) -> IdentitySlot {
        self.inner.identity.clone()
    }

    /// Makes `identity` the server's certificate and key for every channel and session that starts from now on,
    /// and publishes its certificate in the endpoint descriptions. Open channels and sessions keep theirs.
    pub fn replace_identity(&self, identity: LocalIdentity) {
        let discovery = self.inner.discovery.read().with_certificate(identity.certificate());
        *self.inner.discovery.write() = Arc::new(discovery);
        self.inner.identity.replace(identity);
    }

    /// The endpoint descriptions GetEndpoints answers with now.
    pub fn endpoints(&self) -> Vec<opcua_types::EndpointDescription> {
        self.inner.discovery.read().endpoints().to_vec()
    }

    /// How many sessions exist.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.lock().len()
    }

    /// Removes sessions whose timeout passed and tells the session services. Returns when the next one times out.
    pub fn expire_sessions(&self, now: Now) -> Option<std::time::Instant> {
        let (gone, next) = {
            let mut sessions = self.inner.sessions.lock();
            (sessions.expire(now.instant), sessions.poll_timeout())
        };
        for id in &gone {
            self.inner.services.session_closed(id, true);
        }
        next
    }

    fn create_session(&self, body: &[u8], at: usize, channel: &ChannelInfo, now: Now) -> Reply {
        let codec = BodyCodec::shared();
        let request: CreateSessionRequest = match codec.decode_at(body, at) {
            Ok(r) => r,
            Err(e) => return Reply::Ready(fault(codec, 0, e.status_code(), now)),
        };
        let handle = request.request_header.request_handle;
        let client_cert = request.client_certificate.value.clone().unwrap_or_default();
        if !channel.policy.is_none() {
            // The ApplicationUri the client claims must be in its certificate (Part 4 §5.6.2).
            let leaf =
                crate::channel::asymmetric::leaf_certificate(&client_cert).ok().and_then(|l| Cert::from_der(l).ok());
            let claimed = request.client_description.application_uri.as_ref();
            if !leaf.is_some_and(|c| c.uris().iter().any(|u| u == claimed)) {
                tracing::warn!(claimed, "CreateSession: the ApplicationUri is not in the client certificate");
                return Reply::Ready(fault(codec, handle, StatusCode::BadCertificateUriInvalid, now));
            }
        }
        // A secured session names the certificate its channel was opened with (Part 4 §5.6.2: the client checks
        // that CreateSession's serverCertificate is the channel's); over None the current one, for passwords.
        let identity = match (&channel.local_identity, channel.policy.is_none()) {
            (Some(own), false) => Some(own.clone()),
            _ => self.inner.identity.current(),
        };
        let created = {
            let mut sessions = self.inner.sessions.lock();
            let created = sessions.create(
                channel,
                request.session_name.as_ref(),
                request.client_nonce.value.as_deref().unwrap_or_default(),
                &client_cert,
                request.requested_session_timeout,
                now.instant,
            );
            if let Ok(c) = &created {
                sessions.limit_responses(&c.authentication_token, request.max_response_message_size);
                sessions.set_server_identity(&c.authentication_token, identity.clone());
            }
            created
        };
        let created = match created {
            Ok(c) => c,
            Err(status) => return Reply::Ready(fault(codec, handle, status, now)),
        };
        let inner = self.inner.clone();
        let policy = channel.policy;
        Reply::Later(Box::pin(async move {
            let client_nonce = request.client_nonce.value.clone().unwrap_or_default();
            let signature = match (&identity, policy.is_none()) {
                (_, true) => Ok(SignatureData { algorithm: UAString::null(), signature: ByteString::null() }),
                (None, false) => Err(StatusCode::BadInternalError),
                (Some(identity), false) => {
                    let key = identity.key().clone();
                    crate::vault_pool::run(move || {
                        crate::session::sign(key.as_ref(), policy, &client_cert, &client_nonce)
                    })
                    .await
                    .map_err(|_| StatusCode::BadInternalError)
                    .and_then(|r| {
                        r.map_err(|e| {
                            tracing::error!(error = %e, "the vault did not sign the serverSignature");
                            e.status_code()
                        })
                    })
                }
            };
            let signature = match signature {
                Ok(s) => s,
                Err(status) => {
                    // A session the client cannot prove is useless: drop it.
                    inner.sessions.lock().remove(&created.authentication_token);
                    return fault(codec, handle, status, now);
                }
            };
            // Sent on None channels too: a client needs it to encrypt a password under the token policy.
            let server_certificate = match &identity {
                Some(identity) => ByteString::from(identity.certificate().to_vec()),
                None => ByteString::null(),
            };
            let response = CreateSessionResponse {
                response_header: ResponseHeader::new_timestamped_service_result(
                    now.utc,
                    &request.request_header,
                    StatusCode::Good,
                ),
                session_id: created.session_id,
                authentication_token: created.authentication_token,
                revised_session_timeout: created.revised_timeout_ms,
                server_nonce: ByteString::from(created.server_nonce),
                server_certificate,
                server_endpoints: Some(inner.discovery.read().endpoints().to_vec()),
                server_software_certificates: None,
                server_signature: signature,
                max_request_message_size: inner.max_message_size,
            };
            encode_or_fault(codec, ObjectId::CreateSessionResponse_Encoding_DefaultBinary, &response, handle, now)
        }))
    }

    fn activate_session(&self, body: &[u8], at: usize, channel: &ChannelInfo, now: Now) -> Reply {
        let codec = BodyCodec::shared();
        let request: ActivateSessionRequest = match codec.decode_at(body, at) {
            Ok(r) => r,
            Err(e) => return Reply::Ready(fault(codec, 0, e.status_code(), now)),
        };
        let handle = request.request_header.request_handle;
        let token = request.request_header.authentication_token.clone();
        let activation = match self.inner.sessions.lock().begin_activate(&token, channel, now.instant) {
            Ok(a) => a,
            Err(status) => return Reply::Ready(fault(codec, handle, status, now)),
        };
        let inner = self.inner.clone();
        let channel = channel.clone();
        Reply::Later(Box::pin(async move {
            let checks = {
                let inner = inner.clone();
                let activation = activation.clone();
                crate::vault_pool::run(move || check_activation(&inner, &request, &activation))
            };
            let principal = match checks.await {
                Ok(Ok(p)) => p,
                Ok(Err(status)) => {
                    let closed = inner.sessions.lock().fail_activate(&token, now.instant);
                    if let Some(id) = closed {
                        inner.services.session_closed(&id, true);
                    }
                    return fault(codec, handle, status, now);
                }
                Err(_) => return fault(codec, handle, StatusCode::BadInternalError, now),
            };
            let nonce = inner.sessions.lock().finish_activate(&token, &activation, &channel, principal, now.instant);
            match nonce {
                Ok(nonce) => {
                    let response = ActivateSessionResponse {
                        response_header: ResponseHeader::new_timestamped_service_result(
                            now.utc,
                            handle,
                            StatusCode::Good,
                        ),
                        server_nonce: ByteString::from(nonce),
                        results: None,
                        diagnostic_infos: None,
                    };
                    encode_or_fault(
                        codec,
                        ObjectId::ActivateSessionResponse_Encoding_DefaultBinary,
                        &response,
                        handle,
                        now,
                    )
                }
                Err(status) => fault(codec, handle, status, now),
            }
        }))
    }

    fn close_session(&self, body: &[u8], at: usize, channel: &ChannelInfo, now: Now) -> Vec<u8> {
        let codec = BodyCodec::shared();
        let request: CloseSessionRequest = match codec.decode_at(body, at) {
            Ok(r) => r,
            Err(e) => return fault(codec, 0, e.status_code(), now),
        };
        let handle = request.request_header.request_handle;
        let closed = self.inner.sessions.lock().close(
            &request.request_header.authentication_token,
            channel.secure_channel_id,
            now.instant,
        );
        match closed {
            Ok(id) => {
                self.inner.services.session_closed(&id, request.delete_subscriptions);
                let response = CloseSessionResponse {
                    response_header: ResponseHeader::new_timestamped_service_result(now.utc, handle, StatusCode::Good),
                };
                encode_or_fault(codec, ObjectId::CloseSessionResponse_Encoding_DefaultBinary, &response, handle, now)
            }
            Err(status) => fault(codec, handle, status, now),
        }
    }
}

/// ActivateSession's slow checks: the clientSignature (with the channel's policy) and the user token.
fn check_activation(
    inner: &Inner,
    request: &ActivateSessionRequest,
    activation: &super::session::Activation,
) -> Result<super::access::Principal, StatusCode> {
    let (policy, _) = activation.endpoint;
    if !policy.is_none() {
        let (Some(identity), Some(client)) = (&activation.server_identity, &activation.client_certificate) else {
            return Err(StatusCode::BadApplicationSignatureInvalid);
        };
        crate::session::verify(
            client,
            policy,
            identity.certificate(),
            &activation.server_nonce,
            &request.client_signature,
        )
        .map_err(|e| {
            tracing::warn!(session = %activation.session_id, error = %e, "clientSignature invalid");
            StatusCode::BadApplicationSignatureInvalid
        })?;
    }
    // Passwords are encrypted for, and user signatures cover, the certificate this session was created with.
    let mut authenticator = inner.authenticator.clone();
    if activation.server_identity.is_some() {
        authenticator.identity = activation.server_identity.clone();
    }
    let mut principal =
        authenticator.authenticate(&request.user_identity_token, &request.user_token_signature, activation)?;
    let token = &request.user_identity_token;
    if token.is_null() || token.inner_is::<opcua_types::AnonymousIdentityToken>() {
        // Anonymous sessions are "the same user" only from the same client application (Part 4 §5.13.7,
        // TransferSubscriptions; §5.7.3, reactivation): name them after the client certificate.
        if let Some(client) = &activation.client_certificate {
            let hex: String = client.thumbprint().iter().map(|b| format!("{b:02x}")).collect();
            principal.name = format!("anonymous/{hex}");
        }
    }
    Ok(principal)
}

impl ServiceHandler for Services {
    fn handle(&self, body: Vec<u8>, channel: &ChannelInfo, now: Now) -> Reply {
        let codec = BodyCodec::shared();
        let (node, at) = match codec.peek_node(&body) {
            Ok(v) => v,
            Err(e) => return Reply::Ready(fault(codec, 0, e.status_code(), now)),
        };
        let Ok(id) = node.as_object_id() else {
            // A type id that decodes but names nothing we know: the service is unsupported (not undecodable).
            // Every request starts with a RequestHeader, so the fault can still carry the handle.
            let handle = codec.decode_at::<RequestHeader>(&body, at).map_or(0, |h| h.request_handle);
            tracing::debug!(%node, "unknown request type");
            return Reply::Ready(fault(codec, handle, StatusCode::BadServiceUnsupported, now));
        };
        match id {
            ObjectId::GetEndpointsRequest_Encoding_DefaultBinary
            | ObjectId::FindServersRequest_Encoding_DefaultBinary => {
                let discovery = self.inner.discovery.read().clone();
                Reply::Ready(discovery.answer(&body, now))
            }
            // A None channel to a server that offers no None endpoint exists for discovery only.
            _ if channel.policy.is_none() && !self.inner.none_offered => {
                let handle = codec.decode_at::<RequestHeader>(&body, at).map_or(0, |h| h.request_handle);
                Reply::Ready(fault(codec, handle, StatusCode::BadSecurityPolicyRejected, now))
            }
            ObjectId::CreateSessionRequest_Encoding_DefaultBinary => self.create_session(&body, at, channel, now),
            ObjectId::ActivateSessionRequest_Encoding_DefaultBinary => self.activate_session(&body, at, channel, now),
            ObjectId::CloseSessionRequest_Encoding_DefaultBinary => {
                Reply::Ready(self.close_session(&body, at, channel, now))
            }
            ObjectId::CancelRequest_Encoding_DefaultBinary => {
                let request: CancelRequest = match codec.decode_at(&body, at) {
                    Ok(r) => r,
                    Err(e) => return Reply::Ready(fault(codec, 0, e.status_code(), now)),
                };
                let handle = request.request_header.request_handle;
                // Requests are answered as they complete; nothing waits that Cancel could stop early.
                let response = CancelResponse {
                    response_header: ResponseHeader::new_timestamped_service_result(now.utc, handle, StatusCode::Good),
                    cancel_count: 0,
                };
                Reply::Ready(encode_or_fault(
                    codec,
                    ObjectId::CancelResponse_Encoding_DefaultBinary,
                    &response,
                    handle,
                    now,
                ))
            }
            _ => {
                let (token, request_handle) = match codec.route_at(&body, at) {
                    Ok(route) => route,
                    Err(e) => return Reply::Ready(fault(codec, 0, e.status_code(), now)),
                };
                let session = self.inner.sessions.lock().lookup(&token, channel.secure_channel_id, now.instant);
                match session {
                    Ok(session) => {
                        let limit = session.max_response_message_size;
                        let ctx = RequestContext {
                            principal: session.principal,
                            session_id: session.session_id,
                            now,
                            security_mode: channel.mode,
                        };
                        let reply = self.inner.services.handle(id, body, at, ctx, channel);
                        within_response_limit(reply, limit, request_handle, now)
                    }
                    Err(status) => Reply::Ready(fault(codec, request_handle, status, now)),
                }
            }
        }
    }

    fn channel_closed(&self, secure_channel_id: u32) {
        self.inner.services.channel_closed(secure_channel_id);
    }
}
