//! Which client must be closed when: the deadline of every connection the module
//! authenticated (its token's `exp` plus the skew), by client id and by deadline. Bounded by
//! [`MAX_SESSIONS`] (a server's clients are bounded by its `maxclients` anyway).

use std::collections::{BTreeSet, HashMap};

/// At most this many connections are tracked; past it, new token authentications are refused.
pub const MAX_SESSIONS: usize = 1 << 20;

/// Deadlines, in milliseconds since the Unix epoch.
#[derive(Default)]
pub struct Sessions {
    by_client: HashMap<u64, u64>,
    by_deadline: BTreeSet<(u64, u64)>,
}

impl Sessions {
    /// Sets client `id`'s deadline (replacing any); `false` when full.
    pub fn insert(&mut self, id: u64, deadline_ms: u64) -> bool {
        self.remove(id);
        if self.by_client.len() >= MAX_SESSIONS {
            return false;
        }
        self.by_client.insert(id, deadline_ms);
        self.by_deadline.insert((deadline_ms, id));
        true
    }

    /// Forgets client `id`.
    pub fn remove(&mut self, id: u64) {
        if let Some(deadline) = self.by_client.remove(&id) {
            self.by_deadline.remove(&(deadline, id));
        }
    }

    /// Removes and returns the clients whose deadline is at or before `now_ms`.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<u64> {
        let mut due = Vec::new();
        while let Some(&(deadline, id)) = self.by_deadline.first() {
            if deadline > now_ms {
                break;
            }
            self.by_deadline.pop_first();
            self.by_client.remove(&id);
            due.push(id);
        }
        due
    }

    /// How many connections are tracked.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.by_client.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_deadline_replaces_the_old_one() {
        let mut s = Sessions::default();
        assert!(s.insert(1, 100));
        assert!(s.insert(2, 50));
        assert!(s.insert(1, 300));
        assert_eq!(s.take_due(200), vec![2]);
        assert_eq!(s.len(), 1);
        s.remove(1);
        assert!(s.take_due(1000).is_empty());
        assert_eq!(s.len(), 0);
    }
}
