//! `Sticky`: per topic, every consumer holds ⌊Q/C⌋ or ⌈Q/C⌉ queues, and as few queues as
//! possible change owner compared with the previous assignment.
//!
//! The ⌈Q/C⌉ quotas go to the consumers that already hold the most queues (ties by sorted id), so
//! the only queues that move are those of departed consumers, unowned ones, and each consumer's
//! excess over its quota. That count is the minimum any balanced assignment can reach. With no
//! previous assignment the result equals `Averagely`.

use super::model::UNASSIGNED;

/// `previous[q]` is the previous owner of queue `q` when that consumer is still present, else
/// [`UNASSIGNED`]. Fills `owners` (all queues of the topic) for `consumer_count` consumers.
pub fn allocate(previous: &[u32], consumer_count: usize, owners: &mut [u32]) {
    let n = owners.len();
    let c = consumer_count;
    if c == 0 {
        return;
    }
    let mut held = vec![0usize; c];
    for &p in previous {
        if p != UNASSIGNED {
            held[p as usize] += 1;
        }
    }
    let base = n / c;
    let extra = n % c;
    let mut order: Vec<usize> = (0..c).collect();
    // Stable sort: equal holdings keep sorted-id order.
    order.sort_by(|&a, &b| held[b].cmp(&held[a]));
    let mut quota = vec![base; c];
    for &i in order.iter().take(extra) {
        quota[i] += 1;
    }
    // Keep previous queues up to the quota, lowest queue index first.
    let mut kept = vec![0usize; c];
    for (q, &p) in previous.iter().enumerate() {
        if p != UNASSIGNED && kept[p as usize] < quota[p as usize] {
            owners[q] = p;
            kept[p as usize] += 1;
        } else {
            owners[q] = UNASSIGNED;
        }
    }
    // Deal the free queues, in order, to consumers below quota, in sorted-id order.
    let mut next = 0usize;
    for owner in owners.iter_mut() {
        if *owner != UNASSIGNED {
            continue;
        }
        while next < c && kept[next] >= quota[next] {
            next += 1;
        }
        if next == c {
            break;
        }
        *owner = next as u32;
        kept[next] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const U: u32 = UNASSIGNED;

    fn run(previous: &[u32], c: usize) -> Vec<u32> {
        let mut owners = vec![U; previous.len()];
        allocate(previous, c, &mut owners);
        owners
    }

    #[test]
    fn without_history_equals_averagely() {
        assert_eq!(run(&[U; 10], 3), [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn scale_up_moves_only_the_new_share() {
        // 9 queues on 3 consumers, a 4th arrives: it takes 2, the largest holders give one each.
        let prev = [0, 0, 0, 1, 1, 1, 2, 2, 2];
        let next = run(&prev, 4);
        let moved = prev.iter().zip(&next).filter(|(a, b)| a != b).count();
        assert_eq!(moved, 2);
        assert_eq!(next.iter().filter(|&&o| o == 3).count(), 2);
    }

    #[test]
    fn departed_consumer_queues_are_shared() {
        // Queues 2 and 3 belonged to a consumer that left (the caller marks them unassigned).
        let prev = [0, 0, U, U, 1, 1];
        let next = run(&prev, 2);
        assert_eq!(&next[..2], &[0, 0]);
        assert_eq!(&next[4..], &[1, 1]);
        assert_eq!(next.iter().filter(|&&o| o == 0).count(), 3);
    }
}
