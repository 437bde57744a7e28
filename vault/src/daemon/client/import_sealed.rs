//! The client side of the `import-sealed` operation.

use serde_bytes::ByteBuf;

use super::{unexpected, DaemonClient};
use crate::error::Result;
use crate::key::KeyInfo;
use crate::protocol::{Op, Response};

impl DaemonClient {
    /// Has vaultd open `sealed` (a key sealed to this container's transport key, `docs/provisioning.md`) inside the
    /// daemon and store it under `label`. With `certificate`, a key that does not belong to it is refused and not
    /// stored. Errors: a key sealed to another vault is `AccessDenied`, a damaged file `InvalidInput` or
    /// `DecryptFailed`.
    pub fn import_sealed(&self, label: &str, sealed: &[u8], certificate: Option<&[u8]>) -> Result<KeyInfo> {
        match self.key_op(Op::ImportSealed {
            container: self.inner.container.clone(),
            label: label.to_string(),
            sealed: ByteBuf::from(sealed.to_vec()),
            certificate: certificate.map(|c| ByteBuf::from(c.to_vec())),
        })? {
            Response::Key(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }
}
