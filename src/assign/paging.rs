//! RocketMQ AVG (contiguous pages) and AVG_BY_CIRCLE (round robin), over a list of queue indices
//! and a list of consumer indices, both already in RocketMQ's sorted order.

/// AVG: consumer `i` of `C` gets a contiguous page; the first `N mod C` pages hold one more.
pub fn averagely(queues: &[u32], consumers: &[u32], owners: &mut [u32]) {
    let (n, c) = (queues.len(), consumers.len());
    if n == 0 || c == 0 {
        return;
    }
    let modulo = n % c;
    for (i, &consumer) in consumers.iter().enumerate() {
        let size = if n <= c {
            1
        } else if modulo > 0 && i < modulo {
            n / c + 1
        } else {
            n / c
        };
        let start = if modulo > 0 && i < modulo {
            i * size
        } else {
            i * size + modulo
        };
        if start >= n {
            continue;
        }
        let end = (start + size).min(n);
        for &q in &queues[start..end] {
            owners[q as usize] = consumer;
        }
    }
}

/// AVG_BY_CIRCLE: queue `k` goes to consumer `k mod C`.
pub fn by_circle(queues: &[u32], consumers: &[u32], owners: &mut [u32]) {
    if consumers.is_empty() {
        return;
    }
    for (k, &q) in queues.iter().enumerate() {
        owners[q as usize] = consumers[k % consumers.len()];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::model::UNASSIGNED;

    fn run(f: fn(&[u32], &[u32], &mut [u32]), n: u32, c: u32) -> Vec<u32> {
        let queues: Vec<u32> = (0..n).collect();
        let consumers: Vec<u32> = (0..c).collect();
        let mut owners = vec![UNASSIGNED; n as usize];
        f(&queues, &consumers, &mut owners);
        owners
    }

    #[test]
    fn averagely_reference_examples() {
        // N=10, C=3 -> c0: q0-q3, c1: q4-q6, c2: q7-q9.
        assert_eq!(run(averagely, 10, 3), [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]);
        // N=2, C=5 -> c0: q0, c1: q1, others idle.
        assert_eq!(run(averagely, 2, 5), [0, 1]);
        assert_eq!(run(averagely, 8, 8), [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn by_circle_reference_example() {
        // N=10, C=3 -> c0: q0,q3,q6,q9; c1: q1,q4,q7; c2: q2,q5,q8.
        assert_eq!(run(by_circle, 10, 3), [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn subsets_map_through_indices() {
        let mut owners = vec![UNASSIGNED; 6];
        averagely(&[1, 3, 5], &[7, 9], &mut owners);
        assert_eq!(owners, [UNASSIGNED, 7, UNASSIGNED, 7, UNASSIGNED, 9]);
    }
}
