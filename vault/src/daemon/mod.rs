//! The vault daemon: its server (inside `vaultd`) and its client (inside applications).
pub mod client;
