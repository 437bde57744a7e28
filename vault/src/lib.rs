//! # certvault: keys that are used, never read
//!
//! One trait, [`VaultKey`], is the seam between applications and private keys. Backends:
//! - [`DaemonClient`]: keys in an emulated hardware dongle served by `vaultd`, a separate process;
//! - [`pkcs11`]: keys on any PKCS#11 token (SoftHSM2, HSMs, smartcards, tpm2-pkcs11).
//!
//! Adapters make a vault key usable by [`tls`] (rustls `SigningKey`) and [`csr`] (rcgen: CSRs and certificates).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod container;
pub mod csr;
pub mod daemon;
pub mod error;
pub mod key;
pub mod oaep;
pub mod pkcs11;
pub mod protocol;
pub mod provision;
pub mod pubkey;
pub mod sig;
pub mod soft;
pub mod store;
pub mod tls;
pub mod uri;

pub use daemon::client::DaemonClient;
pub use error::{Result, VaultError};
pub use key::{DecryptAlg, HashAlg, KeyAlgorithm, KeyInfo, KeyPolicy, KeySelector, SharedKey, SignAlg, VaultKey};
pub use pubkey::PublicKey;
pub use store::KeyStore;
