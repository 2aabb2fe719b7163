//! When to refresh a token, and how to retry when a refresh fails.

use std::time::Duration;

/// When a token is refreshed.
///
/// A token living `L` is refreshed when `ratio × L` has passed, but no later than `margin`
/// before it expires, and never before `min_share × L` has passed: so a token shorter than the
/// margin is refreshed part-way through its life instead of in a tight loop. Up to
/// `jitter × L` is taken off at random, so that a fleet started together doesn't refresh in step.
///
/// ```
/// use std::time::Duration;
/// use redis_entra::RefreshPolicy;
/// let p = RefreshPolicy::default();
/// // A one-hour token: at 45 minutes (75 %), minus up to 3 minutes of jitter.
/// let at = p.refresh_after(Duration::from_secs(3600), 0.0);
/// assert_eq!(at, Duration::from_secs(2700));
/// // A 20-second token can't be refreshed 3 minutes before expiry: it is refreshed at half its
/// // life, not in a loop.
/// assert_eq!(p.refresh_after(Duration::from_secs(20), 0.0), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RefreshPolicy {
    /// Share of the lifetime after which to refresh (default 0.75).
    pub ratio: f64,
    /// Refresh no later than this before expiry (default 3 minutes, as Microsoft advises).
    pub margin: Duration,
    /// Never refresh before this share of the lifetime has passed (default 0.5).
    pub min_share: f64,
    /// Share of the lifetime taken off at random (default 0.05).
    pub jitter: f64,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            ratio: 0.75,
            margin: Duration::from_secs(180),
            min_share: 0.5,
            jitter: 0.05,
        }
    }
}

impl RefreshPolicy {
    /// How long after receipt a token living `lifetime` should be refreshed, given a random
    /// draw `unit` in `[0, 1)` for the jitter.
    ///
    /// Shares outside `[0, 1]` are clamped into it, and a share that is not a number (NaN,
    /// infinite) counts as its default.
    pub fn refresh_after(&self, lifetime: Duration, unit: f64) -> Duration {
        let d = Self::default();
        let l = lifetime.as_secs_f64();
        let ratio = share(self.ratio, d.ratio);
        let min_share = share(self.min_share, d.min_share).min(ratio);
        let by_ratio = l * ratio;
        let by_margin = l - self.margin.as_secs_f64();
        let jitter = l * share(self.jitter, d.jitter) * share(unit, 0.0);
        let at = (by_ratio.min(by_margin) - jitter).clamp(l * min_share, by_ratio);
        Duration::from_secs_f64(at.max(0.0))
    }
}

/// `x` clamped into `[0, 1]`, or `default` when `x` is not a finite number.
fn share(x: f64, default: f64) -> f64 {
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        default
    }
}

/// How failed token requests are retried. There is no limit on attempts: the token manager
/// keeps trying for as long as it lives, serving the current token while it is valid.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// The first delay (default 500 ms).
    pub initial_delay: Duration,
    /// Each delay is the previous one times this (default 2).
    pub multiplier: f64,
    /// The longest delay (default 30 s).
    pub max_delay: Duration,
    /// While a valid token remains, a delay is at most this share of its time left, so retries
    /// come faster as expiry nears (default 0.1).
    pub max_share_of_time_left: f64,
    /// The longest delay once no valid token is left (default 500 ms), so that recovery is
    /// quick when the identity service comes back: connections waiting for a token get the
    /// first one within this delay plus one token request (the soak in `docs/RELIABILITY.md`
    /// measured recovery with 2 s and with 500 ms). At 500 ms a client makes at most two token
    /// requests a second during an outage.
    pub max_delay_without_token: Duration,
    /// The shortest delay (default 100 ms).
    pub min_delay: Duration,
    /// Share of each delay randomised, up or down (default 0.2).
    pub jitter: f64,
    /// How long one token request may take (default 10 s).
    pub request_timeout: Duration,
    /// Forced refreshes ([`TokenManager::refresh_now`](crate::TokenManager::refresh_now)) are
    /// at least this far apart, the gap doubling up to `max_delay` while they keep coming
    /// (default 1 s).
    pub forced_refresh_interval: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(500),
            multiplier: 2.0,
            max_delay: Duration::from_secs(30),
            max_share_of_time_left: 0.1,
            max_delay_without_token: Duration::from_millis(500),
            min_delay: Duration::from_millis(100),
            jitter: 0.2,
            request_timeout: Duration::from_secs(10),
            forced_refresh_interval: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1 for the first retry), given the time left on
    /// the current token (`None` when there is no valid token), a `Retry-After` the service
    /// asked for, and a random draw `unit` in `[0, 1)`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use redis_entra::RetryPolicy;
    /// let mut p = RetryPolicy::default();
    /// p.jitter = 0.0;
    /// let hour = Some(Duration::from_secs(3600));
    /// assert_eq!(p.delay(1, hour, None, 0.5), Duration::from_millis(500));
    /// assert_eq!(p.delay(3, hour, None, 0.5), Duration::from_secs(2));
    /// assert_eq!(p.delay(30, hour, None, 0.5), Duration::from_secs(30));
    /// // Ten seconds left: retry at least every second.
    /// assert_eq!(p.delay(30, Some(Duration::from_secs(10)), None, 0.5), Duration::from_secs(1));
    /// // Retry-After is honoured when it fits before expiry.
    /// assert_eq!(p.delay(1, hour, Some(Duration::from_secs(7)), 0.5), Duration::from_secs(7));
    /// // No valid token left: retry at least every 500 ms, so recovery is quick.
    /// assert_eq!(p.delay(30, None, None, 0.5), Duration::from_millis(500));
    /// ```
    pub fn delay(
        &self,
        attempt: u32,
        time_left: Option<Duration>,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial_delay.as_secs_f64() * self.multiplier.max(1.0).powi(exp);
        let jitter = 1.0 + self.jitter.clamp(0.0, 1.0) * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        let mut delay = (base * jitter).min(self.max_delay.as_secs_f64());
        if let Some(ra) = retry_after {
            delay = delay.max(ra.as_secs_f64());
        }
        let cap = match time_left {
            Some(left) => left.as_secs_f64() * self.max_share_of_time_left.clamp(0.0, 1.0),
            None => self.max_delay_without_token.as_secs_f64(),
        };
        let delay = delay.min(cap).max(self.min_delay.as_secs_f64());
        Duration::from_secs_f64(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_refreshes_in_a_loop_for_short_tokens() {
        let p = RefreshPolicy::default();
        for secs in [1u64, 5, 30, 60, 200, 239, 240, 400] {
            let l = Duration::from_secs(secs);
            for unit in [0.0, 0.5, 0.999] {
                let at = p.refresh_after(l, unit);
                assert!(at >= l / 2, "{secs}s token refreshed after {at:?}");
                assert!(
                    at <= l.mul_f64(0.75),
                    "{secs}s token refreshed after {at:?}"
                );
            }
        }
    }

    #[test]
    fn margin_applies_when_it_can() {
        let p = RefreshPolicy::default();
        // 10-minute token: the margin (3 min) wins over the ratio (7.5 min).
        assert_eq!(
            p.refresh_after(Duration::from_secs(600), 0.0),
            Duration::from_secs(420)
        );
        // 24-hour managed identity token: the ratio wins, jitter takes up to 72 min off.
        let at = p.refresh_after(Duration::from_secs(86_400), 0.999);
        assert!(at < Duration::from_secs(64_800) && at > Duration::from_secs(60_000));
    }

    #[test]
    fn retry_delay_grows_is_capped_and_never_zero() {
        let p = RetryPolicy::default();
        let mut last = Duration::ZERO;
        for attempt in 1..12 {
            let d = p.delay(attempt, Some(Duration::from_secs(100_000)), None, 0.5);
            assert!(d >= last && d <= p.max_delay, "attempt {attempt}: {d:?}");
            last = d;
        }
        assert_eq!(last, p.max_delay);
        assert_eq!(
            p.delay(9, None, None, 0.99),
            p.max_delay_without_token,
            "without a token, retries stay frequent"
        );
        assert!(p.delay(1, Some(Duration::ZERO), None, 0.0) >= p.min_delay);
    }

    #[test]
    fn nonsense_policies_never_panic() {
        let weird = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            2.0,
            0.0,
            1.0,
        ];
        for &ratio in &weird {
            for &min_share in &weird {
                for &jitter in &weird {
                    let p = RefreshPolicy {
                        ratio,
                        min_share,
                        jitter,
                        ..RefreshPolicy::default()
                    };
                    for &unit in &weird {
                        let l = Duration::from_secs(60);
                        assert!(p.refresh_after(l, unit) <= l, "{p:?} {unit}");
                    }
                }
            }
        }
        for &m in &weird {
            let p = RetryPolicy {
                multiplier: m,
                max_share_of_time_left: m,
                jitter: m,
                ..RetryPolicy::default()
            };
            for &unit in &weird {
                let d = p.delay(3, Some(Duration::from_secs(60)), None, unit);
                assert!(d <= p.max_delay && d >= p.min_delay, "{p:?}: {d:?}");
            }
        }
    }
}
