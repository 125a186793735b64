//! Java `String.compareTo` order: lexicographic over UTF-16 code units, a proper prefix first.
//!
//! It equals Rust's byte order except when a character outside the BMP (a surrogate pair,
//! 0xD800..0xDFFF) meets a BMP character in 0xE000..0xFFFF: Java puts the surrogate first.

use std::cmp::Ordering;

/// Compares two strings as Java's `String.compareTo` does.
pub fn java_cmp(a: &str, b: &str) -> Ordering {
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let common = ab.iter().zip(bb).take_while(|(x, y)| x == y).count();
    if common == ab.len() || common == bb.len() {
        return ab.len().cmp(&bb.len());
    }
    // Both strings agree up to `common`; start comparing UTF-16 at the char that holds it.
    let mut start = common;
    while !a.is_char_boundary(start) {
        start -= 1;
    }
    a[start..].encode_utf16().cmp(b[start..].encode_utf16())
}

/// Sorts strings in Java order.
pub fn sort_java<T: AsRef<str>>(items: &mut [T]) {
    items.sort_unstable_by(|a, b| java_cmp(a.as_ref(), b.as_ref()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_compare_as_text() {
        assert_eq!(java_cmp("orders-10", "orders-2"), Ordering::Less);
        assert_eq!(java_cmp("10.0.0.10@1", "10.0.0.9@1"), Ordering::Less);
        assert_eq!(java_cmp("Broker-z", "broker-10"), Ordering::Less);
        assert_eq!(java_cmp("broker-10", "broker-9"), Ordering::Less);
    }

    #[test]
    fn prefix_sorts_first() {
        assert_eq!(java_cmp("orders", "orders-0"), Ordering::Less);
        assert_eq!(java_cmp("orders-0", "orders"), Ordering::Greater);
        assert_eq!(java_cmp("", "a"), Ordering::Less);
        assert_eq!(java_cmp("same", "same"), Ordering::Equal);
    }

    #[test]
    fn surrogate_pairs_sort_before_high_bmp() {
        // U+1F600 is D83D DE00 in UTF-16, U+FF21 is FF21: Java puts the emoji first,
        // byte order (and Rust's `str::cmp`) the other way round.
        let emoji = "x\u{1F600}";
        let fullwidth = "x\u{FF21}";
        assert_eq!(java_cmp(emoji, fullwidth), Ordering::Less);
        assert_eq!(emoji.cmp(fullwidth), Ordering::Greater);
    }

    #[test]
    fn sort_java_orders_statefulset_pods() {
        let mut ids = vec!["c-2", "c-10", "c-1", "c-0", "c-19"];
        sort_java(&mut ids);
        assert_eq!(ids, ["c-0", "c-1", "c-10", "c-19", "c-2"]);
    }
}
