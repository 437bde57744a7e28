//! # certvault-opcua
//!
//! An OPC UA stack whose application private keys stay in a vault: every asymmetric signature and decryption goes
//! through a [`certvault::VaultKey`] handle, and no type here can hold private key bytes.
//!
//! The protocol core is sans-IO in the style of rustls and quinn-proto: bytes in, bytes and events out, time passed
//! in as a parameter. Modules:
//! - [`transport::uacp`]: the OPC UA Connection Protocol (Hello/Acknowledge/Error/ReverseHello, framing, limits);
//! - [`channel`]: the secure channel: [`channel::chunk`] (headers, layout, splitting, reassembly),
//!   [`channel::policy`], [`channel::keys`] (P_SHA1/P_SHA256), [`channel::symmetric`] (MSG/CLO),
//!   [`channel::asymmetric`] (OPN, through the vault), [`channel::sequence`], and the client/server state machine
//!   [`channel::secure_channel`];
//! - [`pki`]: the trust store (Part 12 Annex F layout) and certificate validation (Part 4 §6.1.3).
//!
//! Every failure is an [`Error`] whose [`Error::status_code`] is the OPC UA status the specification names.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod channel;
pub mod client;
pub mod error;
pub mod pki;
pub mod server;
pub mod service;
pub mod transport;
mod wire;

pub use error::{Error, Result};
