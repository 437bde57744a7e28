//! Secure channel ids: unique among a server's live channels, never 0, released when the connection ends.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The ids of a server's live channels.
#[derive(Debug)]
pub struct ChannelRegistry {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    next: u32,
    live: HashSet<u32>,
}

impl Default for ChannelRegistry {
    fn default() -> Self {
        // A random start, so ids do not reveal how many channels a server has served, and a restarted server does
        // not reuse the ids of the channels its clients still remember.
        let mut seed = [0u8; 4];
        let start = match aws_lc_rs::rand::fill(&mut seed) {
            Ok(()) => u32::from_le_bytes(seed),
            Err(_) => 1,
        };
        ChannelRegistry { inner: Mutex::new(Inner { next: start.max(1), live: HashSet::new() }) }
    }
}

impl ChannelRegistry {
    /// A new, empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(ChannelRegistry::default())
    }

    /// Reserves a fresh id; it is released when the guard drops.
    pub fn allocate(self: &Arc<Self>) -> ChannelId {
        let mut inner = self.lock();
        let mut id = inner.next;
        // At most live.len() + 1 probes: there are 2^32 - 1 ids and far fewer live channels.
        while id == 0 || inner.live.contains(&id) {
            id = id.wrapping_add(1);
        }
        inner.live.insert(id);
        inner.next = id.wrapping_add(1);
        ChannelId { id, registry: self.clone() }
    }

    /// How many channels are live.
    pub fn live(&self) -> usize {
        self.lock().live.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The registry's state stays consistent even if a holder panicked: every update is a single insert/remove.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A reserved channel id.
#[derive(Debug)]
pub struct ChannelId {
    id: u32,
    registry: Arc<ChannelRegistry>,
}

impl ChannelId {
    /// The id.
    pub fn get(&self) -> u32 {
        self.id
    }
}

impl Drop for ChannelId {
    fn drop(&mut self) {
        self.registry.lock().live.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_nonzero_and_released() {
        let registry = ChannelRegistry::new();
        registry.lock().next = u32::MAX;
        let a = registry.allocate();
        let b = registry.allocate();
        assert_eq!(a.get(), u32::MAX);
        assert_eq!(b.get(), 1, "0 is skipped");
        assert_eq!(registry.live(), 2);
        drop(a);
        assert_eq!(registry.live(), 1);
        registry.lock().next = 1;
        assert_eq!(registry.allocate().get(), 2, "a live id is skipped");
    }
}
