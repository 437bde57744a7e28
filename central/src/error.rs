//! The central's error type: every failure a caller can act on has its own variant, and each maps to the HTTP
//! status the operator API answers with.

use thiserror::Error;

/// Result with [`CentralError`].
pub type Result<T, E = CentralError> = std::result::Result<T, E>;

/// What went wrong in the central.
#[derive(Debug, Error)]
pub enum CentralError {
    /// The database refused or failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A schema migration failed.
    #[error("database migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A named thing does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A thing with that name exists already, or the state does not allow the change.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Input that cannot be used (bad names, bad DER, bad parameters).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The request came from a dongle serial the central does not know.
    #[error("device {0} is not registered")]
    UnknownDevice(String),
    /// The dongle is known but not (or no longer) entitled.
    #[error("device {0} is not entitled")]
    NotEntitled(String),
    /// The request's device (or transport) public key is not the one registered for the serial.
    #[error("device {serial}: the request's {which} public key does not match the registered one")]
    KeyMismatch {
        /// Dongle serial.
        serial: String,
        /// `device` or `transport`.
        which: &'static str,
    },
    /// The request's update counter is not the one the central expects.
    #[error("device {serial}: request counter {got} does not match the expected counter {expected}")]
    WrongCounter {
        /// Dongle serial.
        serial: String,
        /// Counter in the request.
        got: u64,
        /// Counter on record.
        expected: u64,
    },
    /// The request's nonce was seen before.
    #[error("replayed request: nonce {0} was seen before")]
    Replay(String),
    /// A requested item has no open order, or does not match its order.
    #[error("device {serial}: {message}")]
    NotOrdered {
        /// Dongle serial.
        serial: String,
        /// What does not match.
        message: String,
    },
    /// An issuer failed or returned something unusable.
    #[error("issuer {issuer}: {message}")]
    Issuer {
        /// The issuer's name (`self-signed`, `ca:NAME`, `external:NAME`).
        issuer: String,
        /// What went wrong.
        message: String,
    },
    /// The vault holding a CA or backup key failed.
    #[error("vault: {0}")]
    Vault(#[from] certvault::VaultError),
    /// The key maker (central key generation) failed.
    #[error("key maker: {0}")]
    KeyMaker(String),
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The operator API wants a bearer token that the request did not carry.
    #[error("the operator API needs a valid bearer token")]
    Unauthorized,
    /// A part that is not wired in yet (e.g. the request/update file formats).
    #[error("not available: {0}")]
    Unavailable(String),
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl CentralError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CentralError::Io { context: context.into(), source }
    }

    /// An issuer error.
    pub fn issuer(issuer: impl Into<String>, message: impl Into<String>) -> Self {
        CentralError::Issuer { issuer: issuer.into(), message: message.into() }
    }

    /// The HTTP status the operator API answers this error with.
    pub fn http_status(&self) -> u16 {
        match self {
            CentralError::NotFound(_) | CentralError::UnknownDevice(_) => 404,
            CentralError::Conflict(_) | CentralError::WrongCounter { .. } | CentralError::Replay(_) => 409,
            CentralError::NotEntitled(_) | CentralError::KeyMismatch { .. } | CentralError::NotOrdered { .. } => 403,
            CentralError::Invalid(_) => 400,
            CentralError::Unauthorized => 401,
            CentralError::Issuer { .. } | CentralError::Vault(_) | CentralError::KeyMaker(_) => 502,
            CentralError::Unavailable(_) => 501,
            CentralError::Database(_)
            | CentralError::Migration(_)
            | CentralError::Config(_)
            | CentralError::Io { .. } => 500,
        }
    }

    /// A short machine-readable name of the variant, for JSON error bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            CentralError::Database(_) => "database",
            CentralError::Migration(_) => "migration",
            CentralError::NotFound(_) => "not-found",
            CentralError::Conflict(_) => "conflict",
            CentralError::Invalid(_) => "invalid",
            CentralError::UnknownDevice(_) => "unknown-device",
            CentralError::NotEntitled(_) => "not-entitled",
            CentralError::KeyMismatch { .. } => "key-mismatch",
            CentralError::WrongCounter { .. } => "wrong-counter",
            CentralError::Replay(_) => "replay",
            CentralError::NotOrdered { .. } => "not-ordered",
            CentralError::Issuer { .. } => "issuer",
            CentralError::Vault(_) => "vault",
            CentralError::KeyMaker(_) => "key-maker",
            CentralError::Config(_) => "config",
            CentralError::Unavailable(_) => "unavailable",
            CentralError::Unauthorized => "unauthorized",
            CentralError::Io { .. } => "io",
        }
    }
}
