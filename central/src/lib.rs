//! # certvault-central: the certificate management central
//!
//! Keeps device types, devices (by dongle serial) and their entitlement, orders (which certificates a device gets),
//! the certificates issued, CRLs, receipts and key backups, in SQLite or PostgreSQL ([`db`]). Answers a device's
//! verified request with the issued chains ([`processing`]), through issuers behind one trait ([`issuer`]). Keys
//! the central makes are made and sealed inside a vault behind [`keymaker::KeyMaker`]; this crate never holds a
//! private key. Operators use the HTTP+JSON API ([`api`]) or the `certvault-central` CLI. See `docs/central.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod db;
pub mod envelope;
pub mod error;
pub mod issuer;
pub mod keymaker;
pub mod processing;
pub mod push;
pub mod registry;
pub mod service;

pub use db::Db;
pub use error::{CentralError, Result};
pub use service::Central;
