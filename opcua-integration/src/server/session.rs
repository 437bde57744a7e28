//! Sessions (Part 4 §5.6): creation, activation on a channel, lookup by authentication token, close and timeout.
//!
//! This is the sans-IO bookkeeping: no clocks but the `Instant`s passed in, no vault calls. The parts of
//! CreateSession and ActivateSession that need the vault (our serverSignature, decrypting a user's password) or are
//! slow on purpose (Argon2id) run in the service layer between [`SessionManager::begin_activate`] and
//! [`SessionManager::finish_activate`], outside any lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opcua_types::{ByteString, Guid, NodeId, StatusCode};

use super::access::Principal;
use crate::channel::asymmetric::{LocalIdentity, PeerCertificate};
use crate::channel::policy::{SecurityMode, SecurityPolicy};
use crate::id_map::IdMap;
use crate::session::new_nonce;
use crate::transport::tcp::ChannelInfo;

/// Limits on sessions.
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    /// Sessions open at once (BadTooManySessions beyond).
    pub max_sessions: usize,
    /// Shortest session timeout granted.
    pub min_timeout: Duration,
    /// Longest session timeout granted.
    pub max_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_sessions: 100,
            min_timeout: Duration::from_secs(10),
            max_timeout: Duration::from_secs(3600),
        }
    }
}

/// One session.
#[derive(Debug)]
pub struct Session {
    /// The public session id (ns=1, a GUID).
    pub id: NodeId,
    /// The secret token requests carry in their header.
    pub authentication_token: NodeId,
    /// The name the client gave.
    pub name: String,
    /// The channel the session is bound to; requests from any other channel are refused.
    pub secure_channel_id: u32,
    /// The policy and mode of the endpoint the session was created on.
    pub endpoint: (SecurityPolicy, SecurityMode),
    /// The client's certificate (the channel's), for clientSignature and re-activation checks.
    pub client_certificate: Option<PeerCertificate>,
    /// The nonce the next ActivateSession must be signed over.
    pub server_nonce: Vec<u8>,
    /// The revised session timeout.
    pub timeout: Duration,
    /// When the last request arrived.
    pub last_activity: Instant,
    /// The identity once activated.
    pub principal: Option<Arc<Principal>>,
    /// ActivateSession attempts refused so far.
    pub failed_activations: u32,
    /// The largest response body the client accepts (CreateSession's maxResponseMessageSize; 0 = no limit).
    pub max_response_message_size: u32,
    /// The server certificate and key this session was created with: its clientSignature and user tokens cover
    /// that certificate even after a certificate update took effect for new sessions.
    pub server_identity: Option<LocalIdentity>,
}

/// Refused ActivateSession attempts after which the session is closed. Each attempt already costs a password hash;
/// closing the session as well makes a guesser pay for a new CreateSession (a vault signature and a session slot)
/// every few guesses instead of retrying on one session for ever.
pub const MAX_FAILED_ACTIVATIONS: u32 = 5;

impl Session {
    fn expires_at(&self) -> Instant {
        self.last_activity + self.timeout
    }
}

/// What CreateSession produced, for its response.
#[derive(Debug, Clone)]
pub struct CreatedSession {
    /// The session id.
    pub session_id: NodeId,
    /// The authentication token.
    pub authentication_token: NodeId,
    /// The server nonce.
    pub server_nonce: Vec<u8>,
    /// The revised timeout in milliseconds.
    pub revised_timeout_ms: f64,
}

/// What the service layer needs to check an ActivateSession outside the manager's lock.
#[derive(Debug, Clone)]
pub struct Activation {
    /// The session id.
    pub session_id: NodeId,
    /// The nonce the client and user token signatures must cover.
    pub server_nonce: Vec<u8>,
    /// The session's endpoint.
    pub endpoint: (SecurityPolicy, SecurityMode),
    /// The certificate clientSignature must verify with.
    pub client_certificate: Option<PeerCertificate>,
    /// The principal of the current activation, when the session was activated before.
    pub current: Option<Arc<Principal>>,
    /// True when the request arrived on another channel than the session's.
    pub channel_changed: bool,
    /// The server identity the session was created with.
    pub server_identity: Option<LocalIdentity>,
}

/// A request's session, resolved from its authentication token.
#[derive(Debug, Clone)]
pub struct SessionRef {
    /// The session id.
    pub session_id: NodeId,
    /// Who is calling.
    pub principal: Arc<Principal>,
    /// The largest response body the client accepts (0 = no limit).
    pub max_response_message_size: u32,
}

/// Every session of a server.
#[derive(Debug, Default)]
pub struct SessionManager {
    limits: SessionLimits,
    sessions: IdMap<NodeId, Session>,
}

impl SessionManager {
    /// No sessions yet.
    pub fn new(limits: SessionLimits) -> Self {
        SessionManager { limits, sessions: IdMap::default() }
    }

    /// How many sessions exist.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True with no sessions.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Creates a session bound to `channel`. `client_nonce` and `client_certificate` are the request's; the
    /// certificate must be the one the channel was opened with.
    pub fn create(
        &mut self,
        channel: &ChannelInfo,
        name: &str,
        client_nonce: &[u8],
        client_certificate: &[u8],
        requested_timeout_ms: f64,
        now: Instant,
    ) -> Result<CreatedSession, StatusCode> {
        if self.sessions.len() >= self.limits.max_sessions {
            return Err(StatusCode::BadTooManySessions);
        }
        if !channel.policy.is_none() {
            if client_nonce.len() < crate::session::NONCE_LEN {
                return Err(StatusCode::BadNonceInvalid);
            }
            // The certificate of CreateSession must be the channel's (Part 4 §5.6.2): otherwise a client could sign
            // sessions with a key it never proved on the channel.
            let channel_cert = channel.peer_certificate.as_ref().map(|c| c.certificate_chain()).unwrap_or_default();
            let leaf = crate::channel::asymmetric::leaf_certificate(client_certificate).unwrap_or_default();
            let channel_leaf = crate::channel::asymmetric::leaf_certificate(channel_cert).unwrap_or_default();
            if leaf.is_empty() || leaf != channel_leaf {
                return Err(StatusCode::BadCertificateInvalid);
            }
        }
        let timeout = clamp_timeout(requested_timeout_ms, &self.limits);
        let server_nonce = new_nonce().map_err(|_| StatusCode::BadInternalError)?.to_vec();
        let token = new_nonce().map_err(|_| StatusCode::BadInternalError)?;
        let session = Session {
            id: NodeId::new(1, Guid::new()),
            authentication_token: NodeId::new(0, ByteString::from(token.to_vec())),
            name: name.to_owned(),
            secure_channel_id: channel.secure_channel_id,
            endpoint: (channel.policy, channel.mode),
            client_certificate: channel.peer_certificate.clone(),
            server_nonce: server_nonce.clone(),
            timeout,
            last_activity: now,
            principal: None,
            failed_activations: 0,
            max_response_message_size: 0,
            server_identity: None,
        };
        let created = CreatedSession {
            session_id: session.id.clone(),
            authentication_token: session.authentication_token.clone(),
            server_nonce,
            revised_timeout_ms: timeout.as_secs_f64() * 1000.0,
        };
        tracing::info!(session = %session.id, name, channel = channel.secure_channel_id, "session created");
        self.sessions.insert(session.authentication_token.clone(), session);
        Ok(created)
    }

    /// Records the server identity a new session was created with (CreateSession's certificate and signature).
    pub fn set_server_identity(&mut self, token: &NodeId, identity: Option<LocalIdentity>) {
        if let Some(session) = self.sessions.get_mut(token) {
            session.server_identity = identity;
        }
    }

    /// The first half of ActivateSession: what the caller must verify before [`SessionManager::finish_activate`].
    ///
    /// A session may move to another channel only with the same client certificate (Part 4 §5.6.3).
    pub fn begin_activate(
        &mut self,
        token: &NodeId,
        channel: &ChannelInfo,
        now: Instant,
    ) -> Result<Activation, StatusCode> {
        let session = self.live(token, now)?;
        let channel_changed = session.secure_channel_id != channel.secure_channel_id;
        // The first activation must come over the channel that created the session (Part 4 §5.6.3).
        if channel_changed && session.principal.is_none() {
            return Err(StatusCode::BadSecureChannelIdInvalid);
        }
        if channel_changed {
            let old = session.client_certificate.as_ref().map(|c| *c.thumbprint());
            let new = channel.peer_certificate.as_ref().map(|c| *c.thumbprint());
            if old != new || session.endpoint != (channel.policy, channel.mode) {
                return Err(StatusCode::BadSecurityChecksFailed);
            }
        }
        Ok(Activation {
            session_id: session.id.clone(),
            server_nonce: session.server_nonce.clone(),
            endpoint: session.endpoint,
            client_certificate: session.client_certificate.clone(),
            current: session.principal.clone(),
            channel_changed,
            server_identity: session.server_identity.clone(),
        })
    }

    /// The second half of ActivateSession, once the signatures and the user token checked out: binds the session
    /// to `channel`, records the principal, and issues the next server nonce. Fails when the session went away or
    /// another activation used the nonce meanwhile.
    pub fn finish_activate(
        &mut self,
        token: &NodeId,
        checked: &Activation,
        channel: &ChannelInfo,
        principal: Principal,
        now: Instant,
    ) -> Result<Vec<u8>, StatusCode> {
        let session = self.live(token, now)?;
        if session.server_nonce != checked.server_nonce {
            return Err(StatusCode::BadNonceInvalid);
        }
        // Moving to a new channel keeps the identity: a different user must activate on the session's own channel.
        if checked.channel_changed && session.principal.as_deref().is_some_and(|p| p.name != principal.name) {
            return Err(StatusCode::BadIdentityChangeNotSupported);
        }
        let nonce = new_nonce().map_err(|_| StatusCode::BadInternalError)?.to_vec();
        session.server_nonce = nonce.clone();
        session.secure_channel_id = channel.secure_channel_id;
        tracing::info!(session = %session.id, user = %principal.name, role = %principal.role, "session activated");
        session.principal = Some(Arc::new(principal));
        session.last_activity = now;
        Ok(nonce)
    }

    /// Records CreateSession's maxResponseMessageSize for the session's later responses.
    pub fn limit_responses(&mut self, token: &NodeId, max_response_message_size: u32) {
        if let Some(session) = self.sessions.get_mut(token) {
            session.max_response_message_size = max_response_message_size;
        }
    }

    /// Counts a refused ActivateSession. Returns the session's id when this refusal closed the session (the caller
    /// then tells the services, as for a timeout); an activated session keeps its identity and stays open.
    pub fn fail_activate(&mut self, token: &NodeId, now: Instant) -> Option<NodeId> {
        let session = self.live(token, now).ok()?;
        session.failed_activations += 1;
        if session.failed_activations < MAX_FAILED_ACTIVATIONS || session.principal.is_some() {
            return None;
        }
        let session = self.sessions.remove(token)?;
        tracing::warn!(session = %session.id, attempts = session.failed_activations, "session closed after refused activations");
        Some(session.id)
    }

    /// The session a request's authentication token names, checked for activation and channel.
    pub fn lookup(&mut self, token: &NodeId, secure_channel_id: u32, now: Instant) -> Result<SessionRef, StatusCode> {
        let session = self.live(token, now)?;
        let Some(principal) = session.principal.clone() else { return Err(StatusCode::BadSessionNotActivated) };
        if session.secure_channel_id != secure_channel_id {
            return Err(StatusCode::BadSecureChannelIdInvalid);
        }
        session.last_activity = now;
        Ok(SessionRef {
            session_id: session.id.clone(),
            principal,
            max_response_message_size: session.max_response_message_size,
        })
    }

    /// Closes the session; returns its id.
    pub fn close(&mut self, token: &NodeId, secure_channel_id: u32, now: Instant) -> Result<NodeId, StatusCode> {
        let session = self.live(token, now)?;
        if session.secure_channel_id != secure_channel_id {
            return Err(StatusCode::BadSecureChannelIdInvalid);
        }
        let id = session.id.clone();
        self.sessions.remove(token);
        tracing::info!(session = %id, "session closed");
        Ok(id)
    }

    /// Drops a session without the channel check (its creation failed half-way).
    pub fn remove(&mut self, token: &NodeId) -> Option<NodeId> {
        self.sessions.remove(token).map(|s| s.id)
    }

    /// Removes sessions whose timeout passed; returns their ids.
    pub fn expire(&mut self, now: Instant) -> Vec<NodeId> {
        let mut gone = Vec::new();
        self.sessions.retain(|_, s| {
            let keep = s.expires_at() > now;
            if !keep {
                tracing::info!(session = %s.id, "session timed out");
                gone.push(s.id.clone());
            }
            keep
        });
        gone
    }

    /// When the next session times out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions.values().map(Session::expires_at).min()
    }

    /// The principal of the session with id `session_id` (for TransferSubscriptions' access check).
    pub fn principal_of(&self, session_id: &NodeId) -> Option<Arc<Principal>> {
        self.sessions.values().find(|s| &s.id == session_id).and_then(|s| s.principal.clone())
    }

    fn live(&mut self, token: &NodeId, now: Instant) -> Result<&mut Session, StatusCode> {
        let expired = self.sessions.get(token).map(|s| s.expires_at() <= now).ok_or(StatusCode::BadSessionIdInvalid)?;
        if expired {
            self.sessions.remove(token);
            return Err(StatusCode::BadSessionIdInvalid);
        }
        self.sessions.get_mut(token).ok_or(StatusCode::BadSessionIdInvalid)
    }
}

fn clamp_timeout(requested_ms: f64, limits: &SessionLimits) -> Duration {
    let requested = if requested_ms.is_finite() && requested_ms > 0.0 {
        Duration::from_secs_f64((requested_ms / 1000.0).min(limits.max_timeout.as_secs_f64()))
    } else {
        limits.max_timeout
    };
    requested.clamp(limits.min_timeout, limits.max_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::access::UserRole;

    fn channel(id: u32) -> ChannelInfo {
        ChannelInfo {
            secure_channel_id: id,
            policy: SecurityPolicy::None,
            mode: SecurityMode::None,
            peer_certificate: None,
            local_identity: None,
        }
    }

    fn activate(
        m: &mut SessionManager,
        token: &NodeId,
        ch: &ChannelInfo,
        name: &str,
        now: Instant,
    ) -> Result<Vec<u8>, StatusCode> {
        let a = m.begin_activate(token, ch, now)?;
        m.finish_activate(token, &a, ch, Principal { name: name.into(), role: UserRole::Operator }, now)
    }

    #[test]
    fn refused_activations_close_an_unactivated_session() {
        let mut m = SessionManager::new(SessionLimits::default());
        let t0 = Instant::now();
        let c = m.create(&channel(1), "s", &[], &[], 60_000.0, t0).unwrap();
        let tok = c.authentication_token.clone();
        for _ in 1..MAX_FAILED_ACTIVATIONS {
            assert_eq!(m.fail_activate(&tok, t0), None);
        }
        assert_eq!(m.fail_activate(&tok, t0), Some(c.session_id));
        assert!(m.is_empty());
        assert_eq!(activate(&mut m, &tok, &channel(1), "u", t0).unwrap_err(), StatusCode::BadSessionIdInvalid);

        // An activated session keeps its identity through refused attempts to change it.
        let c = m.create(&channel(1), "s", &[], &[], 60_000.0, t0).unwrap();
        let tok = c.authentication_token.clone();
        activate(&mut m, &tok, &channel(1), "u", t0).unwrap();
        for _ in 0..MAX_FAILED_ACTIVATIONS {
            assert_eq!(m.fail_activate(&tok, t0), None);
        }
        assert_eq!(m.lookup(&tok, 1, t0).unwrap().session_id, c.session_id);
    }

    #[test]
    fn lifecycle() {
        let mut m = SessionManager::new(SessionLimits::default());
        let t0 = Instant::now();
        let c = m.create(&channel(1), "s", &[], &[], 60_000.0, t0).unwrap();
        assert_eq!(c.revised_timeout_ms, 60_000.0);
        let tok = c.authentication_token.clone();
        assert_eq!(m.lookup(&tok, 1, t0).unwrap_err(), StatusCode::BadSessionNotActivated);
        let n1 = activate(&mut m, &tok, &channel(1), "u", t0).unwrap();
        assert_ne!(n1, c.server_nonce, "every activation issues a new nonce");
        assert_eq!(m.lookup(&tok, 1, t0).unwrap().session_id, c.session_id);
        // Another channel without reactivation.
        assert_eq!(m.lookup(&tok, 2, t0).unwrap_err(), StatusCode::BadSecureChannelIdInvalid);
        // Reactivation on channel 2 moves it, with the same user only.
        let a = m.begin_activate(&tok, &channel(2), t0).unwrap();
        assert!(a.channel_changed);
        assert_eq!(
            m.finish_activate(&tok, &a, &channel(2), Principal { name: "other".into(), role: UserRole::Operator }, t0),
            Err(StatusCode::BadIdentityChangeNotSupported)
        );
        activate(&mut m, &tok, &channel(2), "u", t0).unwrap();
        assert!(m.lookup(&tok, 2, t0).is_ok());
        assert_eq!(m.lookup(&tok, 1, t0).unwrap_err(), StatusCode::BadSecureChannelIdInvalid);
        // A stale nonce (a concurrent activation) is refused.
        assert_eq!(
            m.finish_activate(&tok, &a, &channel(2), Principal { name: "u".into(), role: UserRole::Operator }, t0),
            Err(StatusCode::BadNonceInvalid)
        );
        assert_eq!(m.close(&tok, 1, t0), Err(StatusCode::BadSecureChannelIdInvalid));
        assert_eq!(m.close(&tok, 2, t0).unwrap(), c.session_id);
        assert_eq!(m.lookup(&tok, 2, t0).unwrap_err(), StatusCode::BadSessionIdInvalid);
    }

    #[test]
    fn limits_and_timeouts() {
        let limits = SessionLimits { max_sessions: 2, ..SessionLimits::default() };
        let mut m = SessionManager::new(limits);
        let t0 = Instant::now();
        let a = m.create(&channel(1), "a", &[], &[], 1.0, t0).unwrap();
        assert_eq!(a.revised_timeout_ms, 10_000.0, "clamped to the minimum");
        let b = m.create(&channel(1), "b", &[], &[], f64::NAN, t0).unwrap();
        assert_eq!(b.revised_timeout_ms, 3_600_000.0);
        assert_eq!(m.create(&channel(1), "c", &[], &[], 1.0, t0).unwrap_err(), StatusCode::BadTooManySessions);
        assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        let gone = m.expire(t0 + Duration::from_secs(11));
        assert_eq!(gone, vec![a.session_id]);
        assert_eq!(m.len(), 1);
        assert_eq!(m.lookup(&a.authentication_token, 1, t0).unwrap_err(), StatusCode::BadSessionIdInvalid);
    }

    #[test]
    fn secured_sessions_need_the_channel_certificate_and_a_nonce() {
        use crate::channel::asymmetric::tests::cached;
        let (_, cert) = cached(2048, "client");
        let (_, other) = cached(2048, "server");
        let ch = ChannelInfo {
            secure_channel_id: 1,
            policy: SecurityPolicy::Basic256Sha256,
            mode: SecurityMode::SignAndEncrypt,
            peer_certificate: Some(PeerCertificate::from_der(&cert).unwrap()),
            local_identity: None,
        };
        let mut m = SessionManager::new(SessionLimits::default());
        let t0 = Instant::now();
        assert_eq!(m.create(&ch, "s", &[0; 16], &cert, 1.0, t0).unwrap_err(), StatusCode::BadNonceInvalid);
        assert_eq!(m.create(&ch, "s", &[0; 32], &other, 1.0, t0).unwrap_err(), StatusCode::BadCertificateInvalid);
        let s = m.create(&ch, "s", &[0; 32], &cert, 1.0, t0).unwrap();
        let tok = s.authentication_token.clone();
        activate(&mut m, &tok, &ch, "u", t0).unwrap();
        // The same session from a channel with another client certificate.
        let moved = ChannelInfo {
            secure_channel_id: 2,
            peer_certificate: Some(PeerCertificate::from_der(&other).unwrap()),
            ..ch
        };
        assert_eq!(
            m.begin_activate(&s.authentication_token, &moved, t0).unwrap_err(),
            StatusCode::BadSecurityChecksFailed
        );
    }
}
