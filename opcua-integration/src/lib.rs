//! # certvault-opcua
//!
//! An OPC UA stack whose application private keys stay in a vault: every asymmetric signature and decryption goes
//! through a [`certvault::VaultKey`] handle, and no type here can hold private key bytes.
//!
//! The protocol core is sans-IO in the style of rustls and quinn-proto: bytes in, bytes and events out, time passed
//! in as a parameter; thin tokio drivers own the sockets and timers. Modules:
//! - [`transport`]: the OPC UA Connection Protocol over a byte stream:
//!   - [`transport::uacp`]: Hello/Acknowledge/Error/ReverseHello, framing, limit negotiation;
//!   - [`transport::connection`]: the sans-IO connection phase of a server (Hello timeout, endpoint URL, then the
//!     secure channel) and the client's handshake;
//!   - [`transport::tcp`]: the tokio driver, with vault calls moved onto blocking threads;
//!   - [`transport::url`]: `opc.tcp` URLs.
//! - [`channel`]: the secure channel (UASC):
//!   - [`channel::chunk`]: headers, size arithmetic, padding, splitting and reassembly within the limits;
//!   - [`channel::policy`]: security policies and modes;
//!   - [`channel::keys`]: P_SHA1/P_SHA256 key derivation;
//!   - [`channel::symmetric`]: MSG/CLO signing and encryption;
//!   - [`channel::asymmetric`]: OPN signing and decryption through the vault, [`channel::asymmetric::LocalIdentity`];
//!   - [`channel::sequence`]: sequence numbers;
//!   - [`channel::secure_channel`]: the client/server state machine (Issue, Renew, MSG, CLO, token lifetimes).
//! - [`pki`]: the trust store (Part 12 Annex F layout), certificate validation (Part 4 §6.1.3) with its status
//!   codes, the own-certificate check, and [`pki::StoreValidator`], the store as the channel's trust decision.
//! - [`server`]: the `opc.tcp` server: listener, channel registry, discovery, trust through a [`pki::PkiStore`].
//! - [`client`]: the `opc.tcp` client: connect, certificate checks before the channel, renewal, discovery calls.
//! - [`session`]: what client and server share about sessions: signatures over certificate and nonce, the encrypted
//!   user secret.
//! - [`service`]: encoding and decoding of service request/response bodies; [`read_codec`]: the Read service's
//!   bodies on the hot path.
//! - [`error`]: the crate's [`Error`].
//!
//! Every failure is an [`Error`] whose [`Error::status_code`] is the OPC UA status the specification names.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod channel;
pub mod client;
pub mod config_file;
pub mod error;
pub mod id_map;
pub mod pki;
pub mod read_codec;
pub mod server;
pub mod service;
pub mod session;
pub mod transport;
pub mod vault_pool;
mod wire;

pub use error::{Error, Result};

/// Channel builders for the cargo-fuzz targets (feature `fuzzing`, off by default; see `fuzz/README.md`).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use channel::secure_channel::fuzzing;
