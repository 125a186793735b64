//! RocketMQ MACHINE_ROOM_NEARBY: the queues of a room go to the consumers in that room; the queues
//! of a room with no consumer go to the whole group, each such room allocated on its own.

use std::collections::BTreeMap;

use super::java_order::java_cmp;

/// Groups queue indices by room. Rooms come back in Java order; lists keep the given order.
pub fn by_room<'a>(items: impl Iterator<Item = (&'a str, u32)>) -> Vec<(&'a str, Vec<u32>)> {
    let mut map: BTreeMap<&'a str, Vec<u32>> = BTreeMap::new();
    for (room, idx) in items {
        map.entry(room).or_default().push(idx);
    }
    let mut rooms: Vec<(&str, Vec<u32>)> = map.into_iter().collect();
    rooms.sort_by(|a, b| java_cmp(a.0, b.0));
    rooms
}

/// Pairs each room's queues with whom they go to: the room's own consumers (an index into
/// `consumer_rooms`), or, for a room without consumers, everyone (`None`). Rooms in Java order.
pub fn plan<'q>(
    queue_rooms: &'q [(&'q str, Vec<u32>)],
    consumer_rooms: &[(&str, Vec<u32>)],
) -> Vec<(&'q [u32], Option<usize>)> {
    queue_rooms
        .iter()
        .map(|(room, queues)| {
            let local = consumer_rooms.iter().position(|(r, _)| r == room);
            (queues.as_slice(), local)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphan_rooms_go_to_everyone() {
        let queues = by_room([("az1", 0), ("az2", 1), ("az1", 2), ("az3", 3)].into_iter());
        let consumers = by_room([("az1", 0), ("az4", 1)].into_iter());
        let p = plan(&queues, &consumers);
        assert_eq!(
            p,
            vec![(&[0, 2][..], Some(0)), (&[1][..], None), (&[3][..], None)]
        );
    }
}
