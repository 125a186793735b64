//! Machine rooms of brokers.

/// Java's `String.split("@")`: split at every `@`, then drop trailing empty strings.
fn java_split_at(s: &str) -> Vec<&str> {
    let mut parts: Vec<&str> = s.split('@').collect();
    if parts.len() > 1 {
        while parts.last() == Some(&"") {
            parts.pop();
        }
    }
    parts
}

/// RocketMQ's machine-room rule for broker names: `room@broker` splits into exactly two parts and
/// the room is the first (which may be empty, as in `@broker-x`).
pub fn room_from_broker_name(name: &str) -> Option<&str> {
    match java_split_at(name).as_slice() {
        [room, _] => Some(room),
        _ => None,
    }
}

/// A broker's zone: its explicit zone when set and non-empty, otherwise RocketMQ's naming rule.
pub fn broker_zone(name: &str, zone: Option<&str>) -> Option<String> {
    match zone {
        Some(z) if !z.is_empty() => Some(z.to_string()),
        _ => room_from_broker_name(name).map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_java_split() {
        assert_eq!(room_from_broker_name("room1@broker-a"), Some("room1"));
        assert_eq!(room_from_broker_name("room1@"), None);
        assert_eq!(room_from_broker_name("@broker-x"), Some(""));
        assert_eq!(room_from_broker_name("room1@broker@c"), None);
        assert_eq!(room_from_broker_name("broker-d"), None);
        assert_eq!(room_from_broker_name("room1@broker-a@"), Some("room1"));
        assert_eq!(room_from_broker_name("@"), None);
        assert_eq!(room_from_broker_name(""), None);
    }

    #[test]
    fn explicit_zone_wins_unless_empty() {
        assert_eq!(broker_zone("room1@b", Some("az9")).as_deref(), Some("az9"));
        assert_eq!(broker_zone("room1@b", Some("")).as_deref(), Some("room1"));
        assert_eq!(broker_zone("b", None), None);
    }
}
