//! Client of vaultd.
/// Placeholder.
#[derive(Debug)]
pub struct DaemonClient;
