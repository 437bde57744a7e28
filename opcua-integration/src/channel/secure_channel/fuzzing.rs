//! Test support for the cargo-fuzz targets in `fuzz/` (cargo feature `fuzzing`, off by default; re-exported as
//! `certvault_opcua::fuzzing`). Not a stable API and not for production use: the channels built here trust every
//! certificate and use fixed nonces.
//!
//! Everything here is cheap and deterministic given the identities passed in, so a fuzz target can build a fresh
//! channel per input:
//! - [`server_channel`]: a server waiting for the first OpenSecureChannel, offering every policy and mode;
//! - [`client_channel`]: a client before `open`;
//! - [`client_channel_awaiting_response`]: a client whose OpenSecureChannel Issue (request id 1, the fixed
//!   [`client_nonce`]) is outstanding, built without the RSA work of sending it;
//! - [`open_pair`]: a client and a server with token 1 of channel [`SECURE_CHANNEL_ID`] installed from
//!   [`client_nonce`] and [`server_nonce`], as if the OpenSecureChannel exchange had happened, without RSA.

use std::sync::Arc;

use opcua_types::ChannelSecurityToken;

use super::{
    AcceptAnyCertificate, ClientConfig, LocalIdentity, Now, PeerCertificate, PendingOpen, RoleState, SecureChannel,
    ServerConfig, State,
};
use crate::channel::keys::ChannelKeys;
use crate::channel::policy::{DeprecatedPolicies, SecurityMode, SecurityPolicy};
use crate::channel::symmetric::{SymmetricOpener, SymmetricSealer};
use crate::error::Result;
use crate::transport::uacp::{Limits, Negotiated};

/// The channel id the fuzzing server assigns.
pub const SECURE_CHANNEL_ID: u32 = 42;

/// The token lifetime the fuzzing client requests and [`open_pair`] installs, in milliseconds.
pub const LIFETIME_MS: u32 = 600_000;

/// The (policy, mode) pairs the fuzzing server offers.
pub const ENDPOINTS: [(SecurityPolicy, SecurityMode); 7] = [
    (SecurityPolicy::None, SecurityMode::None),
    (SecurityPolicy::Basic256Sha256, SecurityMode::Sign),
    (SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt),
    (SecurityPolicy::Aes128Sha256RsaOaep, SecurityMode::Sign),
    (SecurityPolicy::Aes128Sha256RsaOaep, SecurityMode::SignAndEncrypt),
    (SecurityPolicy::Aes256Sha256RsaPss, SecurityMode::Sign),
    (SecurityPolicy::Aes256Sha256RsaPss, SecurityMode::SignAndEncrypt),
];

/// The two fixed identities of a fuzzing channel pair.
#[derive(Clone, Debug)]
pub struct Identities {
    /// The server's certificate and key.
    pub server: LocalIdentity,
    /// The client's certificate and key.
    pub client: LocalIdentity,
}

/// The fixed client nonce of `policy` (empty for None).
pub fn client_nonce(policy: SecurityPolicy) -> Vec<u8> {
    vec![0xC1; policy.nonce_len()]
}

/// The fixed server nonce [`open_pair`] uses (empty for None).
pub fn server_nonce(policy: SecurityPolicy) -> Vec<u8> {
    vec![0x5E; policy.nonce_len()]
}

/// Client and server limits after the default Hello/Acknowledge.
pub fn limits() -> (Negotiated, Negotiated) {
    // invariant: the default limits and a constant ASCII endpoint URL always make a valid Hello, and the defaults
    // accept their own Hello; a failure here is a bug in `Limits::default`, caught by the fuzz harness at start-up.
    let l = Limits::default();
    let hello = l.hello("opc.tcp://localhost:4840").expect("default Hello");
    // invariant: the defaults accept the Hello they made (as above).
    let (ack, server) = l.acknowledge(&hello).expect("default Acknowledge");
    // invariant: and the Acknowledge they answered it with (as above).
    (l.accept_acknowledge(&hello, &ack).expect("default limits"), server)
}

/// A server channel waiting for the first OpenSecureChannel; it offers [`ENDPOINTS`] and trusts every client.
pub fn server_channel(ids: &Identities) -> SecureChannel {
    let config = ServerConfig {
        identity: Some(ids.server.clone()),
        endpoints: ENDPOINTS.to_vec(),
        deprecated: DeprecatedPolicies::Reject,
        secure_channel_id: SECURE_CHANNEL_ID,
        min_lifetime_ms: 1_000,
        max_lifetime_ms: 3_600_000,
        validator: Arc::new(AcceptAnyCertificate),
    };
    SecureChannel::server(config, limits().1)
}

/// A client channel for `policy` and `mode` before `open`.
pub fn client_channel(policy: SecurityPolicy, mode: SecurityMode, ids: &Identities) -> Result<SecureChannel> {
    let secured = !policy.is_none();
    let config = ClientConfig {
        policy,
        mode,
        identity: secured.then(|| ids.client.clone()),
        server_certificate: if secured {
            Some(PeerCertificate::from_der(ids.server.certificate_chain())?)
        } else {
            None
        },
        requested_lifetime_ms: LIFETIME_MS,
        deprecated: DeprecatedPolicies::Reject,
    };
    SecureChannel::client(config, limits().0)
}

/// A client whose OpenSecureChannel Issue is outstanding: request id 1, sequence number 1, the fixed
/// [`client_nonce`]. This is the state `open` leaves behind, without its RSA work.
pub fn client_channel_awaiting_response(
    policy: SecurityPolicy,
    mode: SecurityMode,
    ids: &Identities,
) -> Result<SecureChannel> {
    let mut client = client_channel(policy, mode, ids)?;
    client.send_sequence.next_number();
    if let RoleState::Client { pending_open, next_request_id, .. } = &mut client.role {
        *pending_open = Some(PendingOpen { request_id: 1, client_nonce: client_nonce(policy), renew: false });
        *next_request_id = 2;
    }
    client.state = State::Opening;
    Ok(client)
}

/// A client and a server with token 1 of channel [`SECURE_CHANNEL_ID`] installed at `now`, keys derived from the
/// fixed nonces: the state after a successful OpenSecureChannel Issue, without its RSA work. Both `Opened` events
/// are consumed; both sides' sequence numbers continue from 1 (the OPN used number 1 in each direction).
pub fn open_pair(
    policy: SecurityPolicy,
    mode: SecurityMode,
    ids: &Identities,
    now: Now,
) -> Result<(SecureChannel, SecureChannel)> {
    let mut client = client_channel(policy, mode, ids)?;
    let mut server = server_channel(ids);
    let token = ChannelSecurityToken {
        channel_id: SECURE_CHANNEL_ID,
        token_id: 1,
        created_at: now.utc,
        revised_lifetime: LIFETIME_MS,
    };
    let (client_keys, server_keys) = if policy.is_none() {
        ((SymmetricSealer::none(), SymmetricOpener::none()), (SymmetricSealer::none(), SymmetricOpener::none()))
    } else {
        let keys = ChannelKeys::derive(policy, &client_nonce(policy), &server_nonce(policy))?;
        (
            (SymmetricSealer::new(policy, mode, &keys.client)?, SymmetricOpener::new(policy, mode, &keys.server)?),
            (SymmetricSealer::new(policy, mode, &keys.server)?, SymmetricOpener::new(policy, mode, &keys.client)?),
        )
    };
    for channel in [&mut client, &mut server] {
        channel.send_sequence.next_number();
        channel.receive_sequence.check(1)?;
    }
    if let RoleState::Client { next_request_id, .. } = &mut client.role {
        *next_request_id = 2;
    }
    client.secure_channel_id = SECURE_CHANNEL_ID;
    client.install(token.clone(), client_keys.0, client_keys.1, now, false);
    server.policy = policy;
    server.mode = mode;
    server.peer =
        if policy.is_none() { None } else { Some(PeerCertificate::from_der(ids.client.certificate_chain())?) };
    if let RoleState::Server { next_token_id, .. } = &mut server.role {
        *next_token_id = 2;
    }
    server.install(token, server_keys.0, server_keys.1, now, false);
    client.events.clear();
    server.events.clear();
    Ok((client, server))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::asymmetric::tests::cached;
    use crate::channel::secure_channel::Event;

    fn ids() -> Identities {
        let id = |name| {
            let (key, cert) = cached(2048, name);
            LocalIdentity::new(key, cert).unwrap()
        };
        Identities { server: id("server"), client: id("client") }
    }

    #[test]
    fn open_pair_is_usable_in_both_directions() {
        let ids = ids();
        let now = Now::system();
        for (policy, mode) in ENDPOINTS {
            let (mut client, mut server) = open_pair(policy, mode, &ids, now).unwrap();
            let id = client.send_request(b"ping").unwrap();
            server.handle_frame(&client.poll_transmit().unwrap(), now).unwrap();
            assert_eq!(server.poll_event(), Some(Event::Request { request_id: id, body: b"ping".to_vec() }));
            server.send_response(id, b"pong").unwrap();
            client.handle_frame(&server.poll_transmit().unwrap(), now).unwrap();
            assert_eq!(client.poll_event(), Some(Event::Response { request_id: id, body: b"pong".to_vec() }));
        }
    }

    #[test]
    fn the_awaiting_client_accepts_a_real_response() {
        let ids = ids();
        let now = Now::system();
        let (policy, mode) = (SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt);
        let mut client = client_channel(policy, mode, &ids).unwrap();
        client.open(now).unwrap();
        let mut server = server_channel(&ids);
        server.handle_frame(&client.poll_transmit().unwrap(), now).unwrap();
        let mut awaiting = client_channel_awaiting_response(policy, mode, &ids).unwrap();
        awaiting.handle_frame(&server.poll_transmit().unwrap(), now).unwrap();
        assert!(awaiting.is_open());
        assert_eq!(awaiting.secure_channel_id(), SECURE_CHANNEL_ID);
    }
}
