//! Trust store and certificate validation.
//!
//! - [`PkiStore`]: the PKI directory in the layout of OPC 10000-12 Annex F (own, trusted, issuer, rejected). The
//!   `own/private` folder exists for layout compatibility and stays empty: private keys live in the vault.
//! - [`PkiStore::validate`]: the checks of OPC 10000-4 §6.1.3 in the specification's order, each failure a
//!   [`CertError`] with its [`StatusCode`](opcua_types::StatusCode).
//! - [`check_own_certificate`]: the application's own certificate against its vault key and the OPC UA
//!   certificate profile, at load time.
//!
//! Signatures of certificates and CRLs are checked with certvault's public-key code; nothing here touches a
//! private key.

mod cert;
mod channel;
mod identity;
mod policy;
mod sigalg;
mod status;
mod store;
mod trust_list;
mod validate;

#[cfg(test)]
mod tests;

pub use cert::{split_chain, Cert, Crl, ExtKeyUsage, KeyUsageBits};
pub use channel::{check_peer_certificate, limits_for, CertificateRefusal, StoreValidator};
pub use identity::{check_own_certificate, IdentityError};
pub use policy::{PolicyLimits, Role};
pub use sigalg::CertSigAlg;
pub use status::{CertCheck, CertError};
pub use store::{PkiError, PkiStore};
pub use trust_list::{TrustListMasks, TrustLists};
pub use validate::{check_chain_signatures, TrustAnchor, ValidatedCert, ValidationContext, ValidationOptions};
