//! The two-machine demo: machine-a, an OPC UA server for a simulated filling line; machine-b, the operator client
//! that connects to it; and `demo`, which tells the whole story in one command. Both machines keep their private
//! keys in a vault (machine-a in a vaultd container, machine-b on a PKCS#11 token) and never hold them.
//!
//! This library holds what the binaries share: the sans-IO [`line`] model, its OPC UA [`namespace`], machine-b's
//! [`client_config`], the JSON records the binaries print ([`records`]), and small certificate helpers ([`certs`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod certs;
pub mod client_config;
pub mod line;
pub mod namespace;
pub mod records;
