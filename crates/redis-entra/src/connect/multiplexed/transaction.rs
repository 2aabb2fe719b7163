//! Hand-written transactions: which commands open and close a `MULTI`, failing commands after
//! one was lost with its connection, and waiting for one to end before an `AUTH`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::{Cmd, RedisError};

use super::state::Inner;

/// What a command does to a hand-written transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum MultiEffect {
    None,
    Opens,
    Closes,
}

pub(super) fn multi_effect(cmd: &Cmd) -> MultiEffect {
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) if name.len() <= 7 => {
            if name.eq_ignore_ascii_case(b"MULTI") {
                MultiEffect::Opens
            } else if name.eq_ignore_ascii_case(b"EXEC")
                || name.eq_ignore_ascii_case(b"DISCARD")
                || name.eq_ignore_ascii_case(b"RESET")
            {
                MultiEffect::Closes
            } else {
                MultiEffect::None
            }
        }
        _ => MultiEffect::None,
    }
}

impl Inner {
    /// Fails a command while a hand-written transaction lost with its connection is not ended;
    /// notes `MULTI` and its end otherwise.
    pub(super) fn admit(
        &self,
        effects: impl Iterator<Item = MultiEffect>,
    ) -> redis::RedisResult<()> {
        let mut opens = false;
        let mut closes = false;
        for e in effects {
            match e {
                MultiEffect::Opens => opens = true,
                MultiEffect::Closes => {
                    opens = false;
                    closes = true;
                }
                MultiEffect::None => {}
            }
        }
        if self.multi_lost.load(Ordering::Acquire) {
            if closes {
                self.multi_lost.store(false, Ordering::Release);
                self.set_multi(false);
            }
            return Err(RedisError::from((
                redis::ErrorKind::Client,
                "transaction aborted",
                "the connection was replaced inside MULTI (its token was about to expire); the transaction was discarded and nothing of it ran: send it again (EXEC or DISCARD ends this state)".to_string(),
            )));
        }
        if opens {
            self.set_multi(true);
        } else if closes {
            self.set_multi(false);
        }
        Ok(())
    }

    fn set_multi(&self, open: bool) {
        self.multi_open.store(open, Ordering::Release);
        if !open {
            self.multi_closed.notify_waiters();
        }
    }

    /// Waits while a hand-written `MULTI` is open, up to `limit`; whether it is still open.
    pub(super) async fn wait_for_multi_to_close(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let closed = self.multi_closed.notified();
                tokio::pin!(closed);
                closed.as_mut().enable();
                if !self.multi_open.load(Ordering::Acquire) {
                    return;
                }
                closed.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
        self.multi_open.load(Ordering::Acquire)
    }
}
