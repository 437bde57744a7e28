//! The one error type of the OPC UA layers, and its mapping to the status code the specification names.
//!
//! Every malformed or hostile input ends here rather than in a panic. Messages that reach the peer (Error messages,
//! abort chunks) use only [`Error::status_code`]: the text is for our logs, because security failures must not tell
//! an attacker which check failed.

use opcua_types::StatusCode;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the transport and secure-channel layers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A message or chunk type that is unknown, or not allowed where it arrived.
    #[error("message type {0} is not valid here")]
    MessageTypeInvalid(String),
    /// A message or chunk larger than the negotiated buffer, or a reassembled message over the limits.
    #[error("{what} of {size} bytes exceeds the limit of {limit}")]
    MessageTooLarge {
        /// What was measured.
        what: &'static str,
        /// The size found.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A message to send does not fit the peer's limits (we are the client).
    #[error("the request needs {size} (bytes or chunks) but the server accepts {limit}")]
    RequestTooLarge {
        /// What the request needs.
        size: u64,
        /// What the server accepts.
        limit: u64,
    },
    /// A message to send does not fit the peer's limits (we are the server).
    #[error("the response needs {size} (bytes or chunks) but the client accepts {limit}")]
    ResponseTooLarge {
        /// What the response needs.
        size: u64,
        /// What the client accepts.
        limit: u64,
    },
    /// The EndpointUrl of a Hello is malformed or too long.
    #[error("endpoint URL rejected: {0}")]
    EndpointUrlInvalid(String),
    /// A field exceeds a limit the specification or our configuration sets.
    #[error("encoding limits exceeded: {0}")]
    EncodingLimitsExceeded(String),
    /// Bytes that do not decode as the structure they should be.
    #[error("decoding error: {0}")]
    Decoding(String),
    /// A signature, MAC, padding or decryption check failed. Deliberately vague on the wire.
    #[error("security checks failed: {0}")]
    SecurityChecksFailed(&'static str),
    /// A session signature (serverSignature, clientSignature, userTokenSignature) or an encrypted user secret that
    /// does not check out. The services map it to their own status; on its own it is BadApplicationSignatureInvalid.
    #[error("signature invalid: {0}")]
    SignatureInvalid(String),
    /// A certificate that cannot be used (unparsable, not ours, missing).
    #[error("certificate invalid: {0}")]
    CertificateInvalid(String),
    /// A certificate the trust decision rejected, with the status code of the failed check (BadCertificateUntrusted,
    /// BadCertificateTimeInvalid, BadCertificateRevoked, ...).
    #[error("certificate rejected ({status}): {reason}")]
    CertificateRejected {
        /// The status of the failed check.
        status: StatusCode,
        /// What failed.
        reason: String,
    },
    /// Our own certificate does not fit our vault key, ApplicationUri, host names or a security policy we offer or
    /// use: a configuration error found at start-up.
    #[error("own certificate unusable with {policy}: {source}")]
    OwnCertificate {
        /// The security policy it was checked for.
        policy: &'static str,
        /// What does not fit.
        source: crate::pki::IdentityError,
    },
    /// A certificate whose key does not meet the security policy (key length, algorithm).
    #[error("certificate does not meet the security policy: {0}")]
    CertificatePolicyCheckFailed(String),
    /// An unknown security policy, or one that is not enabled here.
    #[error("security policy rejected: {0}")]
    SecurityPolicyRejected(String),
    /// A security mode that is not valid for the policy or the endpoint.
    #[error("security mode rejected: {0}")]
    SecurityModeRejected(String),
    /// A sequence number that replays or skips.
    #[error("sequence number {got} is invalid (expected {expected})")]
    SequenceNumberInvalid {
        /// The number that was expected next.
        expected: u32,
        /// The number received.
        got: u32,
    },
    /// A chunk for a secure channel id this connection does not own.
    #[error("secure channel {0} is unknown")]
    SecureChannelUnknown(u32),
    /// A chunk secured with a token this channel does not know (or no longer accepts).
    #[error("security token {0} is unknown or expired")]
    TokenUnknown(u32),
    /// A nonce of the wrong length.
    #[error("nonce of {got} bytes is invalid (expected {expected})")]
    NonceInvalid {
        /// Required length.
        expected: usize,
        /// Received length.
        got: usize,
    },
    /// The peer speaks a UACP version we do not.
    #[error("UACP protocol version {0} is not supported")]
    ProtocolVersionUnsupported(u32),
    /// The peer's buffer sizes are below the minimum the specification requires.
    #[error("buffer size {size} is below the minimum of {min}")]
    BufferTooSmall {
        /// The size offered.
        size: u32,
        /// The minimum.
        min: u32,
    },
    /// A response whose request id matches no outstanding request.
    #[error("request id {0} matches no outstanding request")]
    RequestIdUnknown(u32),
    /// The operation is not valid in the channel's current state.
    #[error("invalid state: {0}")]
    InvalidState(&'static str),
    /// The secure channel is closed.
    #[error("the secure channel is closed")]
    ChannelClosed,
    /// The peer sent an Error message or an abort chunk.
    #[error("the peer reported {status}: {reason}")]
    Remote {
        /// The peer's status code.
        status: StatusCode,
        /// The peer's reason text.
        reason: String,
    },
    /// The vault refused or failed a key operation.
    #[error("vault: {0}")]
    Vault(#[from] certvault::VaultError),
    /// A local cryptographic primitive failed (should not happen with valid keys).
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
    /// An encoding error from the OPC UA types layer.
    #[error("{0}")]
    Types(#[from] opcua_types::Error),
    /// The socket failed (connect, read, write).
    #[error("transport: {0}")]
    Io(#[from] std::io::Error),
    /// Something did not happen in time (Hello, a response, the vault).
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// A user identity that cannot be turned into a token the endpoint accepts (no matching UserTokenPolicy, a
    /// policy that is not enabled, a password that would travel in clear text).
    #[error("identity token rejected: {0}")]
    IdentityTokenRejected(String),
}

impl Error {
    /// The status code the specification names for this failure.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Error::MessageTypeInvalid(_) => StatusCode::BadTcpMessageTypeInvalid,
            Error::MessageTooLarge { .. } => StatusCode::BadTcpMessageTooLarge,
            Error::RequestTooLarge { .. } => StatusCode::BadRequestTooLarge,
            Error::ResponseTooLarge { .. } => StatusCode::BadResponseTooLarge,
            Error::EndpointUrlInvalid(_) => StatusCode::BadTcpEndpointUrlInvalid,
            Error::EncodingLimitsExceeded(_) => StatusCode::BadEncodingLimitsExceeded,
            Error::Decoding(_) => StatusCode::BadDecodingError,
            Error::SecurityChecksFailed(_) => StatusCode::BadSecurityChecksFailed,
            Error::SignatureInvalid(_) => StatusCode::BadApplicationSignatureInvalid,
            Error::CertificateInvalid(_) => StatusCode::BadCertificateInvalid,
            Error::CertificateRejected { status, .. } => *status,
            Error::CertificatePolicyCheckFailed(_) => StatusCode::BadCertificatePolicyCheckFailed,
            Error::OwnCertificate { source, .. } => {
                use crate::pki::IdentityError as E;
                match source {
                    E::UriMissing { .. } => StatusCode::BadCertificateUriInvalid,
                    E::HostMissing { .. } | E::NoHostNames => StatusCode::BadCertificateHostNameInvalid,
                    E::Usage(_) => StatusCode::BadCertificateUseNotAllowed,
                    E::Policy(_) => StatusCode::BadCertificatePolicyCheckFailed,
                    E::Invalid(_) | E::VaultKey(_) | E::KeyMismatch { .. } => StatusCode::BadCertificateInvalid,
                }
            }
            Error::SecurityPolicyRejected(_) => StatusCode::BadSecurityPolicyRejected,
            Error::SecurityModeRejected(_) => StatusCode::BadSecurityModeRejected,
            Error::SequenceNumberInvalid { .. } => StatusCode::BadSequenceNumberInvalid,
            Error::SecureChannelUnknown(_) => StatusCode::BadTcpSecureChannelUnknown,
            Error::TokenUnknown(_) => StatusCode::BadSecureChannelTokenUnknown,
            Error::NonceInvalid { .. } => StatusCode::BadNonceInvalid,
            Error::ProtocolVersionUnsupported(_) => StatusCode::BadProtocolVersionUnsupported,
            // The specification names no code for undersized buffers; the connection is refused outright.
            Error::BufferTooSmall { .. } => StatusCode::BadConnectionRejected,
            Error::RequestIdUnknown(_) => StatusCode::BadUnknownResponse,
            Error::InvalidState(_) => StatusCode::BadInvalidState,
            Error::ChannelClosed => StatusCode::BadSecureChannelClosed,
            Error::Remote { status, .. } => *status,
            // A failed decryption is a security check like any other; anything else is our side's problem.
            Error::Vault(certvault::VaultError::DecryptFailed) => StatusCode::BadSecurityChecksFailed,
            Error::Vault(_) => StatusCode::BadInternalError,
            Error::Crypto(_) => StatusCode::BadInternalError,
            Error::Types(e) => e.status(),
            Error::Io(_) => StatusCode::BadCommunicationError,
            Error::Timeout(_) => StatusCode::BadTimeout,
            Error::IdentityTokenRejected(_) => StatusCode::BadIdentityTokenRejected,
        }
    }

    /// True when the error must close the secure channel: everything except failures that concern one message (an
    /// abort, a message too large to send, a response to a request we no longer wait for).
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Error::Remote { .. }
                | Error::RequestTooLarge { .. }
                | Error::ResponseTooLarge { .. }
                | Error::RequestIdUnknown(_)
        )
    }

    pub(crate) fn truncated(what: &'static str) -> Error {
        Error::Decoding(format!("{what} is truncated"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_follow_the_specification() {
        assert_eq!(Error::MessageTypeInvalid("XYZ".into()).status_code(), StatusCode::BadTcpMessageTypeInvalid);
        assert_eq!(
            Error::MessageTooLarge { what: "chunk", size: 2, limit: 1 }.status_code(),
            StatusCode::BadTcpMessageTooLarge
        );
        assert_eq!(Error::SecurityChecksFailed("x").status_code(), StatusCode::BadSecurityChecksFailed);
        assert_eq!(
            Error::SequenceNumberInvalid { expected: 1, got: 3 }.status_code(),
            StatusCode::BadSequenceNumberInvalid
        );
        assert_eq!(
            Error::Vault(certvault::VaultError::DecryptFailed).status_code(),
            StatusCode::BadSecurityChecksFailed
        );
        assert_eq!(Error::SecureChannelUnknown(4).status_code(), StatusCode::BadTcpSecureChannelUnknown);
    }
}
