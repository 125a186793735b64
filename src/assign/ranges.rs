//! Compact queue-id range lists: `0-3,8,10-11`.

use std::fmt::Write;

/// Appends `id` to a list of inclusive ranges, extending the last one when `id` follows it.
/// Ids must arrive in ascending order.
pub fn push_id(ranges: &mut Vec<(u32, u32)>, id: u32) {
    match ranges.last_mut() {
        Some((_, end)) if end.checked_add(1) == Some(id) => *end = id,
        _ => ranges.push((id, id)),
    }
}

/// Formats inclusive ranges as `0-3,8`.
pub fn format_ranges(ranges: &[(u32, u32)]) -> String {
    let mut out = String::with_capacity(ranges.len() * 6);
    for (i, &(start, end)) in ranges.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if start == end {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
    }
    out
}

/// Why a range list did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid queue id list {input:?}: {reason}")]
pub struct RangeParseError {
    /// The text that was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses `0-3,8` into sorted, merged inclusive ranges. Whitespace around items is allowed;
/// an empty string is the empty list.
pub fn parse_ranges(input: &str) -> Result<Vec<(u32, u32)>, RangeParseError> {
    let err = |reason: String| RangeParseError {
        input: input.to_string(),
        reason,
    };
    let mut ranges = Vec::new();
    if input.trim().is_empty() {
        return Ok(ranges);
    }
    for item in input.split(',') {
        let item = item.trim();
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| err(format!("{s:?} is not a queue id")))
        };
        let (start, end) = match item.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let n = number(item)?;
                (n, n)
            }
        };
        if start > end {
            return Err(err(format!("range {item:?} runs backwards")));
        }
        ranges.push((start, end));
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some((_, last_end)) if start <= last_end.saturating_add(1) => {
                *last_end = (*last_end).max(end)
            }
            _ => merged.push((start, end)),
        }
    }
    Ok(merged)
}

/// Number of ids in a range list.
pub fn count_ids(ranges: &[(u32, u32)]) -> u64 {
    ranges.iter().map(|&(a, b)| u64::from(b - a) + 1).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_runs_and_singletons() {
        let mut r = Vec::new();
        for id in [0, 1, 2, 3, 8, 10, 11] {
            push_id(&mut r, id);
        }
        assert_eq!(format_ranges(&r), "0-3,8,10-11");
        assert_eq!(format_ranges(&[]), "");
    }

    #[test]
    fn parses_and_merges() {
        assert_eq!(parse_ranges("8, 0-3,4").unwrap(), vec![(0, 4), (8, 8)]);
        assert_eq!(parse_ranges("").unwrap(), vec![]);
        assert!(parse_ranges("3-1").is_err());
        assert!(parse_ranges("a").is_err());
        assert!(parse_ranges("-1").is_err());
        assert_eq!(count_ids(&parse_ranges("0-3,8").unwrap()), 5);
    }

    #[test]
    fn round_trips() {
        let r = parse_ranges("0-3,8,10-4095").unwrap();
        assert_eq!(parse_ranges(&format_ranges(&r)).unwrap(), r);
    }
}
