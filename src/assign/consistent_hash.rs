//! RocketMQ CONSISTENT_HASH: an MD5 ring of virtual nodes.
//!
//! hash(s) = first 4 bytes of MD5(UTF-8 s), big-endian, unsigned. Virtual node keys are
//! `<clientId>-<n>`, queue keys are `MessageQueue.toString()`. On a collision the later insert
//! (later consumer in sorted order, or higher replica index) wins; lookup is an inclusive ceiling
//! with wrap-around.

use std::io::Write;

use md5::{Digest, Md5};

/// RocketMQ's default `MD5Hash`.
pub fn md5_hash(key: &[u8]) -> u32 {
    let digest = Md5::digest(key);
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The ring: (point, consumer index), sorted by point, one owner per point.
pub struct Ring {
    points: Vec<(u32, u32)>,
}

impl Ring {
    /// Builds the ring for `consumers` (indices into `ids`, in sorted order).
    pub fn build(ids: &[String], consumers: &[u32], virtual_nodes: u32) -> Ring {
        let mut points: Vec<(u32, u32, u32)> =
            Vec::with_capacity(consumers.len() * virtual_nodes as usize);
        let mut key = Vec::with_capacity(64);
        let mut seq = 0u32;
        for &c in consumers {
            for r in 0..virtual_nodes {
                key.clear();
                let _ = write!(key, "{}-{}", ids[c as usize], r);
                points.push((md5_hash(&key), seq, c));
                seq += 1;
            }
        }
        points.sort_unstable_by_key(|&(h, s, _)| (h, s));
        let mut ring: Vec<(u32, u32)> = Vec::with_capacity(points.len());
        for (h, _, c) in points {
            match ring.last_mut() {
                // Same point: the later insert replaces the earlier one, as TreeMap.put does.
                Some(last) if last.0 == h => last.1 = c,
                _ => ring.push((h, c)),
            }
        }
        Ring { points: ring }
    }

    /// Owner of the first point at or after `hash`, wrapping around; `None` on an empty ring.
    pub fn owner(&self, hash: u32) -> Option<u32> {
        if self.points.is_empty() {
            return None;
        }
        let i = self.points.partition_point(|&(h, _)| h < hash);
        Some(self.points[if i == self.points.len() { 0 } else { i }].1)
    }
}

/// Writes `MessageQueue [topic=T, brokerName=B, queueId=N]` into `buf`.
pub fn queue_key(buf: &mut Vec<u8>, topic: &str, broker: &str, queue_id: u32) {
    buf.clear();
    let _ = write!(
        buf,
        "MessageQueue [topic={topic}, brokerName={broker}, queueId={queue_id}]"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_hashes() {
        assert_eq!(md5_hash(b"10.0.0.1@1-0"), 2998294157);
        assert_eq!(md5_hash(b"10.0.0.1@1-1"), 423482019);
        let mut buf = Vec::new();
        queue_key(&mut buf, "TopicTest", "broker-a", 0);
        assert_eq!(md5_hash(&buf), 1987926524);
        queue_key(&mut buf, "TopicTest", "broker-a", 1);
        assert_eq!(md5_hash(&buf), 4291349817);
    }

    #[test]
    fn later_insert_wins_on_collision() {
        let ids = vec!["10.0.179.61@1".to_string(), "10.1.10.193@1".to_string()];
        assert_eq!(md5_hash(b"10.0.179.61@1-0"), 0xA5AC50EC);
        assert_eq!(md5_hash(b"10.1.10.193@1-0"), 0xA5AC50EC);
        let ring = Ring::build(&ids, &[0, 1], 1);
        assert_eq!(ring.points, vec![(0xA5AC50EC, 1)]);
    }

    #[test]
    fn lookup_is_inclusive_and_wraps() {
        let ids = vec!["10.1.28.190@1".to_string(), "x".to_string()];
        let ring = Ring::build(&ids, &[0, 1], 1);
        let mut buf = Vec::new();
        queue_key(&mut buf, "orders-47403", "broker-a", 0);
        let h = md5_hash(&buf);
        assert_eq!(h, 0x8BA996D9);
        assert_eq!(md5_hash(b"10.1.28.190@1-0"), h);
        assert_eq!(ring.owner(h), Some(0));
        let max = ring.points.last().unwrap().0;
        assert_eq!(ring.owner(max.wrapping_add(1)), Some(ring.points[0].1));
    }

    #[test]
    fn zero_virtual_nodes_is_an_empty_ring() {
        let ids = vec!["a".to_string()];
        assert_eq!(Ring::build(&ids, &[0], 0).owner(5), None);
    }
}
