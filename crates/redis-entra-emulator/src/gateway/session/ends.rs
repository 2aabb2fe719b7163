//! What ends an authenticated connection besides its deadline: access keys disabled, the
//! signing key of its token revoked, an injected fault, the gateway shutting down.

use super::*;

/// Resolves when access keys are disabled after `epoch` (never when `epoch` is `None`: the
/// connection is not in with a key).
pub(super) async fn keys_disabled(rx: &mut watch::Receiver<u64>, epoch: Option<u64>) {
    match epoch {
        Some(epoch) => {
            if rx.wait_for(|now| *now != epoch).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Resolves when [`Faults::close_all_connections`](crate::faults::Faults::close_all_connections)
/// is called (never if the faults are gone).
/// Resolves when the signing key of generation `generation` (the one that verified the
/// connection's token) is no longer trusted; never for a connection in with an access key or
/// not authenticated (`None`). `rx` is the validator's revocation counter.
pub(super) async fn key_revoked(
    rx: &mut watch::Receiver<u64>,
    validator: &TokenValidator,
    generation: Option<u64>,
) {
    let Some(generation) = generation else {
        return std::future::pending::<()>().await;
    };
    loop {
        if !validator.is_trusted(generation) {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

pub(super) async fn close_all(rx: &mut watch::Receiver<u64>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves at a random moment while the random-close fault is on: after a delay drawn from an
/// exponential distribution with the rate in force, drawn again whenever the rate changes.
pub(super) async fn random_close(rx: &mut watch::Receiver<f64>) {
    loop {
        let rate = *rx.borrow_and_update();
        if rate > 0.0 {
            // 1 - U is in (0, 1], so the logarithm is finite.
            let u: f64 = rand::random();
            let secs = -(1.0 - u).ln() / rate;
            let delay = Duration::try_from_secs_f64(secs)
                .unwrap_or(MAX_DEADLINE)
                .min(MAX_DEADLINE);
            tokio::select! {
                _ = tokio::time::sleep(delay) => return,
                changed = rx.changed() => if changed.is_err() {
                    std::future::pending::<()>().await;
                },
            }
        } else if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves when the gateway shuts down (or was dropped).
pub(super) async fn signalled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
