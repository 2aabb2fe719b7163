//! Tokens verified before: a fleet of connections re-authenticating with the token their
//! client just refreshed costs one RSA verification, then a lookup each. An entry counts only
//! while the keys it was verified with are unchanged (any fetch that changes a tenant's keys
//! forgets everything), and its window and username are checked on every hit. At most
//! [`CAPACITY`] entries; a full memory drops the expired ones, then everything. Keys are the
//! tokens' SHA-256 digests (32 bytes, whatever the token's size): nothing here holds or prints
//! a token.

use std::collections::HashMap;

use aws_lc_rs::digest::{digest, SHA256};

use redis_entra_jwt::{now_f64, Rejection, Rules};

use crate::verify::Valid;

/// How many verified tokens are remembered at most.
pub const CAPACITY: usize = 4096;

struct Entry {
    oid: String,
    exp: f64,
    keys_epoch: u64,
}

/// Verified tokens, by their bytes.
#[derive(Default)]
pub struct Remembered {
    entries: HashMap<[u8; 32], Entry>,
}

impl Remembered {
    /// The result for a token verified under `keys_epoch`: `None` when it is not remembered
    /// (or the keys changed since).
    pub fn lookup(
        &mut self,
        token: &[u8],
        username: &[u8],
        keys_epoch: u64,
        rules: &Rules,
    ) -> Option<Result<Valid, Rejection>> {
        let key = key_of(token);
        let entry = self.entries.get(&key)?;
        if entry.keys_epoch != keys_epoch {
            self.entries.remove(&key);
            return None;
        }
        // `nbf` was passed when it was verified: only `exp` can have changed its mind.
        if let Err(r) = rules.check_window(entry.exp, None, now_f64()) {
            return Some(Err(r));
        }
        if !entry.oid.as_bytes().eq_ignore_ascii_case(username) {
            return Some(Err(Rejection::UsernameMismatch));
        }
        Some(Ok(Valid {
            oid: entry.oid.clone(),
            exp: entry.exp as u64,
        }))
    }

    /// Remembers a token that passed every check.
    pub fn remember(&mut self, token: &[u8], valid: &Valid, keys_epoch: u64, rules: &Rules) {
        if self.entries.len() >= CAPACITY {
            let now = now_f64();
            self.entries
                .retain(|_, e| rules.check_window(e.exp, None, now).is_ok());
            if self.entries.len() >= CAPACITY {
                self.entries.clear();
            }
        }
        self.entries.insert(
            key_of(token),
            Entry {
                oid: valid.oid.clone(),
                exp: valid.exp as f64,
                keys_epoch,
            },
        );
    }
}

/// The token's SHA-256 digest.
fn key_of(token: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    key.copy_from_slice(digest(&SHA256, token).as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_counts_for_its_keys_window_and_username() {
        let rules = Rules::default();
        let mut m = Remembered::default();
        let valid = Valid {
            oid: "abc".into(),
            exp: now_f64() as u64 + 60,
        };
        m.remember(b"t", &valid, 1, &rules);
        assert_eq!(m.lookup(b"t", b"ABC", 1, &rules), Some(Ok(valid.clone())));
        assert_eq!(
            m.lookup(b"t", b"x", 1, &rules),
            Some(Err(Rejection::UsernameMismatch))
        );
        assert_eq!(m.lookup(b"t", b"abc", 2, &rules), None, "the keys changed");
        assert_eq!(
            m.lookup(b"t", b"abc", 1, &rules),
            None,
            "and it was forgotten"
        );
        let expired = Valid {
            oid: "abc".into(),
            exp: 1,
        };
        m.remember(b"old", &expired, 1, &rules);
        assert_eq!(
            m.lookup(b"old", b"abc", 1, &rules),
            Some(Err(Rejection::Expired))
        );
    }
}
