//! The one error type of the vault crate.
//!
//! Every message names what went wrong and, where there is one, the fix, because these errors reach operators
//! through the CLI and the OPC UA stack's logs.

use std::path::PathBuf;

/// Errors of vault backends, the daemon protocol and the adapters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// No key (or container) matches the selector.
    #[error("no key matches {0}")]
    KeyNotFound(String),
    /// A key with that label already exists; labels are unique per container or token.
    #[error("a key labelled {0:?} already exists")]
    DuplicateLabel(String),
    /// The key cannot perform the requested algorithm (wrong key type, size, or a disabled legacy algorithm).
    #[error("{}", unsupported_message(key, alg, why))]
    Unsupported {
        /// Label of the key.
        key: String,
        /// The algorithm asked for.
        alg: String,
        /// Why it is refused.
        why: String,
    },
    /// The caller sent input the operation cannot use (bad ciphertext length, malformed DER, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A decryption failed (bad padding, wrong key). Deliberately carries no detail: padding oracles.
    #[error("decryption failed")]
    DecryptFailed,
    /// The PIN was wrong.
    #[error("wrong PIN: {attempts_left} attempt(s) left before the vault locks")]
    WrongPin {
        /// Attempts left before lockout.
        attempts_left: u32,
    },
    /// Too many wrong PINs: only the admin PIN can unlock.
    #[error("the vault is locked after too many wrong PINs: unlock it with `certvault unlock` and the admin PIN")]
    PinLocked,
    /// A key operation was attempted before logging in.
    #[error("not logged in: give the PIN (--pin-file, CERTVAULT_PIN) first")]
    NotLoggedIn,
    /// The peer's uid may not use this key or operation.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// The daemon socket cannot be reached.
    #[error("cannot reach vaultd at {}: {err}. Is it running? Start it with `vaultd --container <FILE> --socket {}`", socket.display(), socket.display())]
    DaemonUnavailable {
        /// The socket path that was tried.
        socket: PathBuf,
        /// The connect error.
        err: std::io::Error,
    },
    /// The daemon answered with something this client does not understand, or a frame was malformed.
    #[error("vault protocol error: {0}")]
    Protocol(String),
    /// The container file is unusable.
    #[error("container {}: {why}", path.display())]
    Container {
        /// The container file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Another daemon holds the container.
    #[error("container {} is in use by another vaultd (its lock file is held)", .0.display())]
    ContainerBusy(PathBuf),
    /// A PKCS#11 call failed.
    #[error("PKCS#11: {0}")]
    Pkcs11(String),
    /// A `pkcs11:` or `vaultd:` URI could not be parsed.
    #[error("bad key URI {uri:?}: {why}")]
    BadUri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        why: String,
    },
    /// The daemon failed in a way the client cannot fix (storage, resources); the message is the daemon's.
    #[error("vaultd: {0}")]
    Daemon(String),
    /// The crypto library reported an error.
    #[error("crypto failure: {0}")]
    Crypto(String),
    /// The audit log does not verify.
    #[error("audit log {}: {why}", path.display())]
    Audit {
        /// The log file.
        path: PathBuf,
        /// The first problem found.
        why: String,
    },
    /// An I/O error with the file it happened on.
    #[error("{context}: {err}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        err: std::io::Error,
    },
}

impl VaultError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, err: std::io::Error) -> Self {
        VaultError::Io { context: context.into(), err }
    }
}

/// An `Unsupported` rebuilt from the daemon's answer has only the daemon's sentence, already complete.
fn unsupported_message(key: &str, alg: &str, why: &str) -> String {
    if key.is_empty() && alg.is_empty() {
        why.to_string()
    } else {
        format!("key {key:?} cannot do {alg}: {why}")
    }
}

/// Result alias of the vault crate.
pub type Result<T, E = VaultError> = std::result::Result<T, E>;
