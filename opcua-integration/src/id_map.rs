//! Hash maps keyed by ids that we or the application chose: sessions by authentication token and nodes by NodeId
//! (server), pending requests by request id (client).
//!
//! Every request looks up its session and then its nodes, and SipHash (the std default) over a NodeId was about 2 %
//! of the server's time per Read. SipHash's key protects a table against collision floods from keys an attacker
//! chooses and inserts. Here no client inserts a key: authentication tokens are 32 random bytes from the server's
//! generator, nodes come from the application's namespace (there is no AddNodes service), and a client's request ids
//! are its own counter. A peer only presents a key to look up, which at worst lands in one bucket of keys it did not
//! choose. So a fast unkeyed hash (the FxHash step, as rustc uses, with a final mix) is enough.
//!
//! ```
//! use certvault_opcua::id_map::IdMap;
//! use opcua_types::NodeId;
//!
//! let mut nodes: IdMap<NodeId, &str> = IdMap::default();
//! nodes.insert(NodeId::new(2, "Setpoint"), "a variable");
//! assert_eq!(nodes.get(&NodeId::new(2, "Setpoint")), Some(&"a variable"));
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`IdHasher`]. Only for keys that the server or the application inserts (see the module docs).
pub type IdMap<K, V> = HashMap<K, V, IdHash>;

/// Builds [`IdHasher`]s.
pub type IdHash = BuildHasherDefault<IdHasher>;

/// The FxHash step over every word written (one rotate, xor and multiply per word), then the murmur3 finalizer so the
/// low bits (the bucket) and the top 7 bits (hashbrown's control byte) both depend on every input bit.
#[derive(Default, Clone, Copy, Debug)]
pub struct IdHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length in the top byte: "ab" and "ab\0" differ.
            word[7] = rest.len() as u8;
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        // The multiplies carry low input bits upwards only: the murmur3 finalizer spreads every bit over the bucket
        // index (low bits) and the control byte (top bits).
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use opcua_types::{ByteString, NodeId};

    fn spread(hashes: &[u64]) -> (usize, usize, usize) {
        let distinct = hashes.iter().collect::<HashSet<_>>().len();
        // hashbrown picks the bucket from the low bits and the control byte from the top 7.
        let low = hashes.iter().map(|h| h & 1023).collect::<HashSet<_>>().len();
        let top = hashes.iter().map(|h| h >> 57).collect::<HashSet<_>>().len();
        (distinct, low, top)
    }

    #[test]
    fn random_session_tokens_spread_over_the_bits_the_table_uses() {
        let build = IdHash::default();
        let token = |ns: u16, bytes: &[u8]| NodeId::new(ns, ByteString::from(bytes.to_vec()));
        let raw: Vec<Vec<u8>> = (0..2000).map(|_| crate::session::new_nonce().unwrap().to_vec()).collect();
        let hashes: Vec<u64> = raw.iter().map(|b| build.hash_one(token(0, b))).collect();
        let (distinct, low, top) = spread(&hashes);
        assert_eq!(distinct, raw.len(), "no two tokens share a hash");
        assert!(low > 800, "{low} of 1024 low values");
        assert_eq!(top, 128);
        // The same token always hashes the same; a different namespace or one changed byte does not.
        assert_eq!(build.hash_one(token(0, &raw[0])), hashes[0]);
        assert_ne!(build.hash_one(token(1, &raw[0])), hashes[0]);
        let mut changed = raw[0].clone();
        changed[31] ^= 1;
        assert_ne!(build.hash_one(token(0, &changed)), hashes[0]);
    }

    #[test]
    fn sequential_numeric_and_similar_string_node_ids_spread_too() {
        let build = IdHash::default();
        let numeric: Vec<u64> = (0..2000u32).map(|i| build.hash_one(NodeId::new(2, i))).collect();
        let (distinct, low, top) = spread(&numeric);
        assert_eq!(distinct, 2000);
        assert!(low > 800, "{low} of 1024 low values");
        assert_eq!(top, 128);
        let strings: Vec<u64> = (0..2000).map(|i| build.hash_one(NodeId::new(2, format!("Machine.Axis{i}")))).collect();
        let (distinct, low, top) = spread(&strings);
        assert_eq!(distinct, 2000);
        assert!(low > 800, "{low} of 1024 low values");
        assert_eq!(top, 128);
    }

    #[test]
    fn a_map_finds_what_it_holds_and_nothing_else() {
        let mut map: IdMap<NodeId, u32> = IdMap::default();
        for i in 0..500u32 {
            map.insert(NodeId::new(1, format!("n{i}")), i);
        }
        for i in 0..500u32 {
            assert_eq!(map.get(&NodeId::new(1, format!("n{i}"))), Some(&i));
        }
        assert_eq!(map.get(&NodeId::new(2, "n1")), None);
        assert_eq!(map.get(&NodeId::new(1, "n500")), None);
    }
}
