//! The vault daemon: its server ([`server`], inside `vaultd`) and its client ([`client`], inside applications).
//!
//! The daemon is deliberately thread-per-connection with blocking I/O: every connection's crypto runs on its own
//! thread, so a slow key operation never holds up another client, and there is no async runtime in the process
//! that holds the keys.
pub mod client;
pub mod launch;
pub mod server;
