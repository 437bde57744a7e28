//! OPC UA Secure Conversation (UASC), sans-IO: chunks, asymmetric (OPN) and symmetric (MSG/CLO) security,
//! policies and key derivation.

pub mod asymmetric;
pub mod chunk;
pub mod keys;
pub mod mac;
pub mod policy;
pub mod secure_channel;
pub mod sequence;
pub mod symmetric;

/// Which end of the secure channel we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Opens the channel and sends requests.
    Client,
    /// Accepts the channel and answers requests.
    Server,
}
