//! Flagging possible duplicates after a handover without a marker, and screening out the
//! control channel.

use std::collections::HashMap;

use super::message::Message;
use super::subscriptions::SubscriptionKind;

/// What the application gets of a message from the live connection: nothing for the control
/// channel; otherwise the message, flagged if it repeats one the old connection delivered
/// during a handover without a marker (`dedup`, cleared once the overlap is over).
pub(super) fn screen(
    dedup: &mut HashMap<u64, usize>,
    control: &[u8],
    mut m: Message,
) -> Option<Message> {
    // Before the duplicate check: a control message is no evidence that the overlap is over.
    if m.kind == SubscriptionKind::Channel && m.channel == control {
        return None;
    }
    if !dedup.is_empty() {
        let f = m.fingerprint();
        match dedup.get_mut(&f) {
            Some(n) => {
                m.possible_duplicate = true;
                *n -= 1;
                if *n == 0 {
                    dedup.remove(&f);
                }
            }
            // The overlap is a prefix of the new connection's messages: it is over.
            None => dedup.clear(),
        }
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(channel: &str, payload: &str) -> Message {
        Message {
            kind: SubscriptionKind::Channel,
            channel: channel.as_bytes().to_vec(),
            pattern: None,
            payload: payload.as_bytes().to_vec(),
            possible_duplicate: false,
        }
    }

    /// RESP2 handover fallback: a control-channel message arriving among the new connection's
    /// first messages must not end the duplicate check (it used to clear it, so the duplicates
    /// after it went unflagged).
    #[test]
    fn a_control_message_does_not_end_the_duplicate_check() {
        let control = b"__redis-entra:handover:x".to_vec();
        let mut dedup = HashMap::new();
        for m in [msg("c", "1"), msg("c", "2")] {
            *dedup.entry(m.fingerprint()).or_insert(0) += 1;
        }
        let first = screen(&mut dedup, &control, msg("c", "1")).unwrap();
        assert!(first.possible_duplicate());
        assert!(screen(&mut dedup, &control, msg("__redis-entra:handover:x", "m")).is_none());
        let second = screen(&mut dedup, &control, msg("c", "2")).unwrap();
        assert!(
            second.possible_duplicate(),
            "a duplicate after a control message went unflagged"
        );
        let fresh = screen(&mut dedup, &control, msg("c", "3")).unwrap();
        assert!(!fresh.possible_duplicate());
    }
}
