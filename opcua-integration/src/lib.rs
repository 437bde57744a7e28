//! # certvault-opcua
//!
//! An OPC UA stack whose application private keys stay in a vault: every asymmetric signature and decryption goes
//! through a [`certvault::VaultKey`] handle, and no type here can hold private key bytes.
//!
//! The protocol core is sans-IO in the style of rustls and quinn-proto: bytes in, bytes and events out, time passed
//! in as a parameter. Modules:
//! - [`transport::uacp`]: the OPC UA Connection Protocol (Hello/Acknowledge/Error/ReverseHello, framing, limits);
//! - [`channel`]: the secure channel (chunks, security policies, key derivation, symmetric and asymmetric security).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod channel;
pub mod error;
pub mod transport;
mod wire;

pub use error::{Error, Result};
