//! The server's current certificate and vault key, behind one swap.
//!
//! Every new channel and session takes the identity in the slot at the moment it starts and keeps that copy for its
//! lifetime, so ApplyChanges (GDS push) changes what new connections see while existing channels and sessions
//! continue with the key they were opened with (it stays in the vault).

use std::sync::Arc;

use parking_lot::RwLock;

use crate::channel::asymmetric::LocalIdentity;

/// A shared, swappable [`LocalIdentity`].
#[derive(Clone, Debug, Default)]
pub struct IdentitySlot {
    inner: Arc<RwLock<Option<LocalIdentity>>>,
}

impl IdentitySlot {
    /// A slot holding `identity` (none: a server that offers only policy None).
    pub fn new(identity: Option<LocalIdentity>) -> Self {
        IdentitySlot { inner: Arc::new(RwLock::new(identity)) }
    }

    /// The identity new channels and sessions use now (a cheap clone: a key handle and the certificate bytes).
    pub fn current(&self) -> Option<LocalIdentity> {
        self.inner.read().clone()
    }

    /// Puts `identity` in place for everything that starts from now on; returns the one it replaces.
    pub fn replace(&self, identity: LocalIdentity) -> Option<LocalIdentity> {
        self.inner.write().replace(identity)
    }
}
