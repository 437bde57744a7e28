//! The seam to the request, update and receipt file formats: an [`Envelope`] turns a signed request file into a
//! [`VerifiedRequest`], an [`Issued`] result into a signed update file, and a receipt file into a
//! [`VerifiedReceipt`]. The formats (CMS envelopes, documented with the device side) are plugged in by the
//! application; until then [`NotWired`] answers every call with a clear error.

use crate::error::{CentralError, Result};
use crate::processing::{Issued, VerifiedReceipt, VerifiedRequest};

/// Request/update/receipt file formats.
pub trait Envelope: Send + Sync {
    /// Checks a request file's signature (by the device key it names) and returns its content.
    fn verify_request(&self, body: &[u8]) -> Result<VerifiedRequest>;
    /// Makes the signed update file for a processed request.
    fn seal_update(&self, issued: &Issued) -> Result<Vec<u8>>;
    /// Checks a receipt file's signature and returns its content.
    fn verify_receipt(&self, body: &[u8]) -> Result<VerifiedReceipt>;
}

/// The placeholder until the file formats are wired in: every call fails with [`CentralError::Unavailable`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NotWired;

fn not_wired() -> CentralError {
    CentralError::Unavailable("the request/update/receipt file formats are not wired into this central yet".into())
}

impl Envelope for NotWired {
    fn verify_request(&self, _: &[u8]) -> Result<VerifiedRequest> {
        Err(not_wired())
    }
    fn seal_update(&self, _: &Issued) -> Result<Vec<u8>> {
        Err(not_wired())
    }
    fn verify_receipt(&self, _: &[u8]) -> Result<VerifiedReceipt> {
        Err(not_wired())
    }
}
