//! The token manager against a mock identity provider: single flight, refresh before expiry,
//! retrying forever through an outage, and never pushing a token that is not fresher.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use base64::Engine;
use redis_entra::{TokenEvent, TokenManager, TokenManagerOptions};

/// Issues unsigned JWTs with an `oid`, living `lifetime`; fails while `down` is set.
#[derive(Debug)]
struct MockIdentity {
    calls: AtomicU64,
    down: AtomicBool,
    lifetime: Mutex<Duration>,
    oid: Option<&'static str>,
    /// When set, every token expires at this fixed time (a cache that returns the same token).
    fixed_expiry: Mutex<Option<SystemTime>>,
}

impl MockIdentity {
    fn new(lifetime: Duration) -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicU64::new(0),
            down: AtomicBool::new(false),
            lifetime: Mutex::new(lifetime),
            oid: Some("11111111-2222-3333-4444-555555555555"),
            fixed_expiry: Mutex::new(None),
        })
    }
}

fn jwt(claims: serde_json::Value) -> String {
    let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.c2ln",
        enc.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        enc.encode(claims.to_string())
    )
}

#[async_trait::async_trait]
impl TokenCredential for MockIdentity {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        // A little latency, so that concurrent callers overlap with the request in flight.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if self.down.load(Ordering::SeqCst) {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Io,
                "identity endpoint unreachable (mock outage)",
            ));
        }
        let expires: SystemTime = self
            .fixed_expiry
            .lock()
            .unwrap()
            .unwrap_or_else(|| SystemTime::now() + *self.lifetime.lock().unwrap());
        let exp = expires.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let mut claims = serde_json::json!({ "exp": exp, "n": n });
        if let Some(oid) = self.oid {
            claims["oid"] = oid.into();
        }
        Ok(AccessToken::new(Secret::new(jwt(claims)), expires.into()))
    }
}

fn fast_retry() -> TokenManagerOptions {
    let mut o = TokenManagerOptions::default();
    o.retry.initial_delay = Duration::from_millis(50);
    o.retry.max_delay = Duration::from_millis(200);
    o.retry.max_delay_without_token = Duration::from_millis(200);
    o.retry.min_delay = Duration::from_millis(20);
    o
}

#[tokio::test]
async fn concurrent_callers_share_one_request() {
    let idp = MockIdentity::new(Duration::from_secs(3600));
    let manager = TokenManager::new(idp.clone(), TokenManagerOptions::default());
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let m = manager.clone();
        tasks.push(tokio::spawn(async move { m.credentials().await }));
    }
    for t in tasks {
        let creds = t.await.unwrap().unwrap();
        assert_eq!(creds.username(), "11111111-2222-3333-4444-555555555555");
    }
    assert_eq!(idp.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn refreshes_before_expiry_once_per_lifetime() {
    let idp = MockIdentity::new(Duration::from_secs(4));
    let manager = TokenManager::new(idp.clone(), TokenManagerOptions::default());
    let mut watch = manager.watch();
    let first = watch.next().await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(6), watch.next())
        .await
        .expect("a refresh within the first token's lifetime")
        .unwrap();
    assert!(second.generation() > first.generation());
    assert!(
        SystemTime::now() < first.expires_on(),
        "the refresh must come before the first token expires"
    );
    assert!(second.expires_on() > first.expires_on());
    // One request per refresh, not a loop (the redis crate's provider asks ~600 times a second
    // for tokens shorter than 240 s).
    assert_eq!(idp.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn keeps_retrying_through_an_outage_and_recovers() {
    let idp = MockIdentity::new(Duration::from_secs(2));
    let manager = TokenManager::new(idp.clone(), fast_retry());
    let mut events = manager.events();
    let first = manager.credentials().await.unwrap();
    idp.down.store(true, Ordering::SeqCst);
    // Wait until well past the first token's expiry: many more failures than any anchor allows.
    let mut failures = 0u32;
    while failures < 12 || !first.is_expired() {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(TokenEvent::RefreshFailed { attempt, .. })) => failures = attempt,
            Ok(Ok(_)) => {}
            other => panic!("expected refresh failures, got {other:?}"),
        }
    }
    // A caller during the outage gets the error, not a hang and not a stale token.
    let err = manager.credentials().await.unwrap_err();
    assert!(err.to_string().contains("mock outage"), "{err}");
    idp.down.store(false, Ordering::SeqCst);
    let recovered = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.recv().await {
                Ok(TokenEvent::Refreshed { generation, .. }) => return generation,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("recovery after the outage");
    assert_eq!(recovered, 2);
    assert!(!manager.credentials().await.unwrap().is_expired());
}

#[tokio::test]
async fn a_token_no_fresher_than_the_current_one_is_not_pushed() {
    let idp = MockIdentity::new(Duration::from_secs(2));
    let fixed = SystemTime::now() + Duration::from_secs(3);
    *idp.fixed_expiry.lock().unwrap() = Some(fixed);
    let manager = TokenManager::new(idp.clone(), TokenManagerOptions::default());
    let mut events = manager.events();
    let first = manager.credentials().await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.recv().await.unwrap() {
                TokenEvent::NotFresher { .. } => return,
                TokenEvent::Refreshed { generation, .. } if generation > 1 => {
                    panic!("a token no fresher was pushed")
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(event.is_ok(), "expected a NotFresher event");
    assert_eq!(manager.current().unwrap().generation(), first.generation());
}

#[tokio::test]
async fn a_token_without_oid_is_an_error_that_says_so() {
    let idp = Arc::new(MockIdentity {
        oid: None,
        ..Arc::try_unwrap(MockIdentity::new(Duration::from_secs(60))).unwrap()
    });
    let manager = TokenManager::new(idp, fast_retry());
    let err = manager.credentials().await.unwrap_err();
    assert!(err.to_string().contains("no `oid` claim"), "{err}");
}

#[tokio::test]
async fn debug_output_never_shows_the_token() {
    let idp = MockIdentity::new(Duration::from_secs(60));
    let manager = TokenManager::new(idp, TokenManagerOptions::default());
    let creds = manager.credentials().await.unwrap();
    let token = creds.token().to_string();
    for text in [format!("{creds:?}"), format!("{manager:?}")] {
        assert!(!text.contains(&token), "{text}");
        assert!(!text.contains(token.split('.').nth(1).unwrap()), "{text}");
    }
}

#[tokio::test]
async fn the_background_task_stops_with_the_last_handle() {
    let idp = MockIdentity::new(Duration::from_secs(2));
    let manager = TokenManager::new(idp.clone(), TokenManagerOptions::default());
    let mut watch = manager.watch();
    watch.next().await.unwrap();
    drop(manager);
    // The watch ends once the task has stopped.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while watch.next().await.is_some() {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the task kept running after the manager was dropped"
    );
}

/// Soak regression (docs/RELIABILITY.md, "Soak"): once the token has expired, the default retry
/// policy must get the first token within about half a second of the identity service coming
/// back. With the former 2 s `max_delay_without_token`, a heal right after a failed attempt
/// waited 1.6-2 s for the next one.
#[tokio::test]
async fn soak_regression_default_policy_recovers_within_half_a_second_once_no_token_is_left() {
    let idp = MockIdentity::new(Duration::from_secs(1));
    let manager = TokenManager::new(idp.clone(), TokenManagerOptions::default());
    let mut events = manager.events();
    let first = manager.credentials().await.unwrap();
    idp.down.store(true, Ordering::SeqCst);
    // Fail until the token has expired and the backoff has grown past its cap.
    let mut failures_without_token = 0u32;
    while failures_without_token < 4 {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(TokenEvent::RefreshFailed {
                time_left: None, ..
            })) => failures_without_token += 1,
            Ok(Ok(_)) => {}
            other => panic!("expected refresh failures, got {other:?}"),
        }
    }
    assert!(first.is_expired());
    // Heal right after a failed attempt: the worst moment, a whole retry delay ahead.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(TokenEvent::RefreshFailed { retry_in, .. })) => {
                assert!(
                    retry_in <= Duration::from_millis(500),
                    "retry in {retry_in:?} with no valid token"
                );
                break;
            }
            Ok(Ok(_)) => {}
            other => panic!("expected a refresh failure, got {other:?}"),
        }
    }
    idp.down.store(false, Ordering::SeqCst);
    let healed = std::time::Instant::now();
    let recovered = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(TokenEvent::Refreshed { .. }) = events.recv().await {
                return healed.elapsed();
            }
        }
    })
    .await
    .expect("recovery after the outage");
    // 500 ms at most, plus the mock's 20 ms and scheduling on a shared machine.
    assert!(
        recovered < Duration::from_millis(800),
        "first token {recovered:?} after the identity service came back"
    );
}

/// A credential that panics on its first `panics` calls, then issues tokens.
#[derive(Debug)]
struct PanickyIdentity {
    inner: Arc<MockIdentity>,
    panics: AtomicU64,
}

#[async_trait::async_trait]
impl TokenCredential for PanickyIdentity {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        if self
            .panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            panic!("a credential with a bug");
        }
        self.inner.get_token(scopes, options).await
    }
}

/// Many connections refused by the server each ask for a new token (`refresh_now`): the identity
/// service sees a bounded number of requests, not one per connection per failure.
#[tokio::test]
async fn forced_refreshes_are_rate_limited() {
    let idp = MockIdentity::new(Duration::from_secs(3600));
    let manager = TokenManager::new(idp.clone(), TokenManagerOptions::default());
    manager.credentials().await.unwrap();
    let started = std::time::Instant::now();
    let mut asked = 0u64;
    // 100 "connections" asking every 20 ms for two seconds: about 10,000 forced refreshes.
    while started.elapsed() < Duration::from_secs(2) {
        for _ in 0..100 {
            manager.refresh_now();
            asked += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = idp.calls.load(Ordering::SeqCst);
    // The first token, then forced refreshes at most 1 s, 2 s, … apart: 3 in two seconds.
    assert!(
        calls <= 4,
        "{calls} token requests for {asked} forced refreshes in 2 s"
    );
    assert!(calls >= 2, "a forced refresh must still happen");
    let stats = manager.stats();
    assert_eq!(stats.requests, calls);
    assert_eq!(stats.forced_calls, asked, "{stats:?}");
    assert_eq!(stats.forced, calls - 1, "{stats:?}");
}

/// While a failed request's backoff runs, a forced refresh does not bring the next attempt
/// forward (nor would it honour a `Retry-After` otherwise).
#[tokio::test]
async fn forced_refreshes_honour_the_backoff_after_a_failure() {
    let idp = MockIdentity::new(Duration::from_secs(3600));
    let manager = TokenManager::new(idp.clone(), TokenManagerOptions::default());
    let mut events = manager.events();
    manager.credentials().await.unwrap();
    idp.down.store(true, Ordering::SeqCst);
    manager.refresh_now();
    // Wait for the failure: the default policy retries 500 ms later, then 1 s, then 2 s.
    loop {
        if let Ok(Ok(TokenEvent::RefreshFailed { .. })) =
            tokio::time::timeout(Duration::from_secs(5), events.recv()).await
        {
            break;
        }
    }
    let after_failure = idp.calls.load(Ordering::SeqCst);
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1200) {
        manager.refresh_now();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let during_backoff = idp.calls.load(Ordering::SeqCst) - after_failure;
    assert!(
        during_backoff <= 2,
        "{during_backoff} requests during a 1.2 s backoff of 500 ms then 1 s"
    );
}

/// The manager's task lives on the runtime that started it; when that runtime goes away (a
/// `BlockingTokenManager` dropped, a test runtime ended), the next caller restarts it on its own
/// runtime instead of waiting forever.
#[test]
fn the_task_restarts_after_its_runtime_was_dropped() {
    let idp = MockIdentity::new(Duration::from_secs(3600));
    let manager = TokenManager::new(idp.clone(), TokenManagerOptions::default());
    {
        let first = tokio::runtime::Runtime::new().unwrap();
        first.block_on(manager.credentials()).unwrap();
    }
    // Through a BlockingTokenManager too: its runtime thread stops with it.
    let blocking = redis_entra::BlockingTokenManager::with_manager(manager.clone()).unwrap();
    drop(blocking);
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        manager.refresh_now();
        let mut watch = manager.watch();
        let next = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let c = watch.next().await.unwrap();
                if c.generation() >= 2 {
                    return c;
                }
            }
        })
        .await
        .expect("a new token on the second runtime");
        assert!(!next.is_expired());
    });
}

/// A credential that panics is a failed request, retried with backoff; it does not kill the
/// task (which used to leave every caller waiting forever).
#[tokio::test]
async fn a_panicking_credential_is_retried_not_fatal() {
    let idp = Arc::new(PanickyIdentity {
        inner: MockIdentity::new(Duration::from_secs(3600)),
        panics: AtomicU64::new(2),
    });
    let manager = TokenManager::new(idp.clone(), fast_retry());
    let creds = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match manager.credentials().await {
                Ok(c) => return c,
                Err(e) => assert!(e.to_string().contains("panicked"), "{e}"),
            }
        }
    })
    .await
    .expect("a token after the credential stopped panicking");
    assert_eq!(creds.generation(), 1);
}

/// Nonsense in a policy (NaN, infinities, negative shares) neither panics the task nor stops
/// refreshes.
#[tokio::test]
async fn a_nonsense_refresh_policy_neither_panics_nor_stops_refreshing() {
    let idp = MockIdentity::new(Duration::from_secs(2));
    let mut options = fast_retry();
    options.refresh.ratio = f64::NAN;
    options.refresh.min_share = f64::INFINITY;
    options.refresh.jitter = -3.0;
    let manager = TokenManager::new(idp.clone(), options);
    let mut watch = manager.watch();
    watch.next().await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("a refresh within the token's life")
        .unwrap();
    assert_eq!(second.generation(), 2);
}
