//! # certvault-opcua
//!
//! An OPC UA stack whose application private keys stay in a vault.
//! - [`pki`]: the trust store (Part 12 Annex F layout) and certificate validation (Part 4 §6.1.3).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod pki;
