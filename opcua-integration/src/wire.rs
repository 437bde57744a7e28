//! Little-endian readers and writers for the few OPC UA binary fields the framing layers parse by hand.
//!
//! Headers are parsed here rather than through `opcua_types` streams so that every short read becomes a typed
//! [`Error`] naming the field, and no length read from the wire is trusted before it is checked against what is left.

use crate::error::{Error, Result};

/// A cursor over a received buffer. Every read checks the remaining length first.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or_else(|| Error::truncated(what))?;
        let out = self.buf.get(self.pos..end).ok_or_else(|| Error::truncated(what))?;
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let b = self.bytes(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }

    /// A ByteString: Int32 length (-1 = null), then the bytes. Longer than `max` is an encoding-limits error.
    pub(crate) fn byte_string(&mut self, max: usize, what: &'static str) -> Result<Option<&'a [u8]>> {
        let len = self.i32(what)?;
        if len < 0 {
            // Only -1 means null; other negative lengths are tolerated as null, as Part 6 §5.2.2.4 allows.
            return Ok(None);
        }
        let len = len as usize;
        if len > max {
            return Err(Error::EncodingLimitsExceeded(format!("{what} of {len} bytes exceeds {max}")));
        }
        self.bytes(len, what).map(Some)
    }

    /// A String: a ByteString that must be UTF-8.
    pub(crate) fn string(&mut self, max: usize, what: &'static str) -> Result<Option<&'a str>> {
        match self.byte_string(max, what)? {
            None => Ok(None),
            Some(b) => std::str::from_utf8(b).map(Some).map_err(|_| Error::Decoding(format!("{what} is not UTF-8"))),
        }
    }
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// An Int32: array lengths (-1 is a null array or string) and enumerations.
pub(crate) fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Writes a ByteString; `None` is the null string. Lengths over `i32::MAX` cannot come from our own buffers.
pub(crate) fn put_byte_string(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => out.extend_from_slice(&(-1i32).to_le_bytes()),
        Some(b) => {
            let len = i32::try_from(b.len()).unwrap_or(i32::MAX);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(b.get(..len as usize).unwrap_or(b));
        }
    }
}

pub(crate) fn byte_string_len(v: Option<&[u8]>) -> usize {
    4 + v.map_or(0, <[u8]>::len)
}

#[cfg(test)]
/// Overwrites a little-endian u32 at `at`; a no-op if `out` is too short.
pub(crate) fn patch_u32(out: &mut [u8], at: usize, v: u32) {
    if let Some(dst) = out.get_mut(at..at + 4) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
}

/// Truncates `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_check_bounds() {
        let mut r = Reader::new(&[1, 0, 0, 0, 0xff]);
        assert_eq!(r.u32("a").unwrap(), 1);
        assert!(matches!(r.u32("b"), Err(Error::Decoding(_))));
        assert_eq!(r.u8("c").unwrap(), 0xff);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn byte_strings_round_trip_and_respect_limits() {
        let mut out = Vec::new();
        put_byte_string(&mut out, Some(b"abc"));
        put_byte_string(&mut out, None);
        assert_eq!(out.len(), byte_string_len(Some(b"abc")) + byte_string_len(None));
        let mut r = Reader::new(&out);
        assert_eq!(r.byte_string(3, "x").unwrap(), Some(&b"abc"[..]));
        assert_eq!(r.byte_string(3, "y").unwrap(), None);
        let mut r = Reader::new(&out);
        assert!(matches!(r.byte_string(2, "x"), Err(Error::EncodingLimitsExceeded(_))));
        // A length that points past the end is a truncation, not a panic.
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0x7f, 1]);
        assert!(matches!(r.byte_string(usize::MAX, "z"), Err(Error::Decoding(_))));
    }

    #[test]
    fn truncation_keeps_utf8_valid() {
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("abc", 5), "abc");
    }
}
