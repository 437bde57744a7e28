//! Sequence numbers of one direction of a secure channel (Part 6 §6.7.2.4), RSA ("legacy") rules: each chunk's
//! number is the previous plus one; the sender may wrap only after passing `u32::MAX - 1024`, and then to a number
//! below 1024. Anything else is a replay or a gap: `BadSequenceNumberInvalid`.

use crate::error::{Error, Result};

/// Numbers above this may be followed by a wrapped number.
pub const WRAP_AFTER: u32 = u32::MAX - 1024;
/// A wrapped number is below this.
pub const WRAP_BELOW: u32 = 1024;

/// Numbers for the chunks we send.
#[derive(Clone, Debug)]
pub struct SendSequence {
    next: u32,
}

impl Default for SendSequence {
    fn default() -> Self {
        SendSequence { next: 1 }
    }
}

impl SendSequence {
    /// Starts at `first` (tests use this to reach the wrap).
    pub fn starting_at(first: u32) -> Self {
        SendSequence { next: first }
    }

    /// The number for the next chunk.
    pub fn next_number(&mut self) -> u32 {
        let n = self.next;
        self.next = if n > WRAP_AFTER { 1 } else { n + 1 };
        n
    }
}

/// Checks the numbers of the chunks we receive.
#[derive(Clone, Debug, Default)]
pub struct ReceiveSequence {
    last: Option<u32>,
}

impl ReceiveSequence {
    /// Accepts `n` if it follows the last number (any number is accepted first), else `BadSequenceNumberInvalid`.
    pub fn check(&mut self, n: u32) -> Result<()> {
        if let Some(last) = self.last {
            let follows = last.checked_add(1) == Some(n);
            let wraps = last > WRAP_AFTER && n < WRAP_BELOW;
            if !follows && !wraps {
                return Err(Error::SequenceNumberInvalid { expected: last.wrapping_add(1), got: n });
            }
        }
        self.last = Some(n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_numbers_pass_replays_and_gaps_fail() {
        let mut tx = SendSequence::default();
        let mut rx = ReceiveSequence::default();
        for _ in 0..5 {
            rx.check(tx.next_number()).unwrap();
        }
        assert!(matches!(rx.check(5), Err(Error::SequenceNumberInvalid { expected: 6, got: 5 })));
        let mut rx2 = ReceiveSequence::default();
        rx2.check(10).unwrap();
        assert_eq!(rx2.check(12).unwrap_err().status_code(), opcua_types::StatusCode::BadSequenceNumberInvalid);
        // A refused number does not move the window (the channel closes anyway).
        rx2.check(11).unwrap();
    }

    #[test]
    fn wrap_happens_only_near_the_top() {
        let mut tx = SendSequence::starting_at(WRAP_AFTER);
        let mut rx = ReceiveSequence::default();
        let a = tx.next_number();
        let b = tx.next_number();
        let c = tx.next_number();
        assert_eq!((a, b, c), (WRAP_AFTER, WRAP_AFTER + 1, 1));
        for n in [a, b, c] {
            rx.check(n).unwrap();
        }
        // A "wrap" from low numbers is a gap.
        let mut rx = ReceiveSequence::default();
        rx.check(5000).unwrap();
        assert!(rx.check(1).is_err());
        // After the top, a wrap to >= 1024 is refused.
        let mut rx = ReceiveSequence::default();
        rx.check(u32::MAX).unwrap();
        assert!(rx.check(WRAP_BELOW).is_err());
        let mut rx = ReceiveSequence::default();
        rx.check(u32::MAX).unwrap();
        rx.check(0).unwrap();
    }
}
