//! RocketMQ MACHINE_ROOM: only queues of brokers in the consumed rooms are shared out.
//!
//! `per = E / C` queues of the eligible list go to each consumer as a contiguous block; the
//! remainder is dealt from the tail, one each to the first `E mod C` consumers. Queues of other
//! rooms are given to nobody.

/// Splits `eligible` (queue indices in sorted order) among `consumers`.
pub fn allocate(eligible: &[u32], consumers: &[u32], owners: &mut [u32]) {
    let c = consumers.len();
    if c == 0 {
        return;
    }
    let per = eligible.len() / c;
    let rem = eligible.len() % c;
    for (i, &consumer) in consumers.iter().enumerate() {
        for &q in &eligible[i * per..i * per + per] {
            owners[q as usize] = consumer;
        }
        if i < rem {
            owners[eligible[per * c + i] as usize] = consumer;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::model::UNASSIGNED;

    #[test]
    fn remainder_comes_from_the_tail() {
        // 10 eligible, C=3 -> c0: e0,e1,e2,e9; c1: e3-e5; c2: e6-e8.
        let eligible: Vec<u32> = (0..10).collect();
        let mut owners = vec![UNASSIGNED; 10];
        allocate(&eligible, &[0, 1, 2], &mut owners);
        assert_eq!(owners, [0, 0, 0, 1, 1, 1, 2, 2, 2, 0]);
    }

    #[test]
    fn more_consumers_than_eligible_queues() {
        let mut owners = vec![UNASSIGNED; 2];
        allocate(&[0, 1], &[0, 1, 2, 3], &mut owners);
        assert_eq!(owners, [0, 1]);
    }
}
