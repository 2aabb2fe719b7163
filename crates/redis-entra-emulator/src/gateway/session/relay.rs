//! Phase 2: the relay between an authenticated client and its backend connection, the
//! replies followed on the way ([`follow`]) and the lease that ends it ([`guard`]).

use super::*;
use crate::gateway::slots::SlotRules;
use crate::profile::ClusterPolicy;

/// An authenticated session's backend side, as phase 2 relays it (built outside
/// [`phase2`] so that its future holds references, not a second copy).
pub(super) struct Relay {
    backend_reader: ReadHalf<BackendStream>,
    backend_writer: WriteHalf<BackendStream>,
    lease: watch::Receiver<Lease>,
    tracker: Mutex<Tracker>,
}

impl Relay {
    pub(super) fn new(session: Session) -> Self {
        let (backend_reader, backend_writer) = tokio::io::split(session.backend);
        Self {
            backend_reader,
            backend_writer,
            lease: session.tracker.lease(),
            tracker: Mutex::new(session.tracker),
        }
    }
}

/// Closes the connection when its lease runs out: the token's deadline, access keys
/// disabled, or (after `RESET`) the time to authenticate again. Follows the lease as Redis'
/// replies change it.
async fn guard(
    lease: &mut watch::Receiver<Lease>,
    revocations: &mut watch::Receiver<u64>,
    key_revocations: &mut watch::Receiver<u64>,
    validator: &TokenValidator,
) -> End {
    loop {
        let now = *lease.borrow_and_update();
        tokio::select! {
            _ = sleep_until(now.deadline) => {
                return if now.authenticated { End::Expired } else { End::AuthTimeout };
            }
            _ = keys_disabled(revocations, now.key_epoch) => return End::KeysDisabled,
            _ = key_revoked(key_revocations, validator, now.key_generation) => {
                return End::KeyRevoked
            }
            changed = lease.changed() => if changed.is_err() {
                std::future::pending::<()>().await;
            },
        }
    }
}

/// Reads the replies in `bytes` and lets the tracker follow them. What to write to the client:
/// `None` for `bytes` as they are, or the bytes to write instead when a reply is rewritten (an
/// unsupported command's error; `holding` carries a rewritten reply across reads). `Err` if the
/// connection must end.
fn follow(
    scanner: &mut Scanner,
    bytes: &[u8],
    holding: &mut bool,
    tracker: &Mutex<Tracker>,
    ctx: &Ctx<'_>,
) -> Result<Option<Vec<u8>>, End> {
    let mut t = tracker.lock().unwrap_or_else(|e| e.into_inner());
    // Set once a reply is held back: the bytes to write, and where the part of `bytes` not
    // written yet starts (`None` while holding).
    let mut out: Option<Vec<u8>> = holding.then(Vec::new);
    let mut pending_from = if *holding { None } else { Some(0) };
    let mut pos = 0;
    while pos < bytes.len() {
        if !*holding && scanner.at_boundary() && bytes.get(pos) == Some(&b'-') && t.rewrites_next()
        {
            *holding = true;
            let buf = out.get_or_insert_with(Vec::new);
            if let Some(from) = pending_from.take() {
                buf.extend_from_slice(bytes.get(from..pos).unwrap_or(&[]));
            }
        }
        let Ok((used, reply)) = scanner.next(bytes.get(pos..).unwrap_or(&[])) else {
            debug!(conn = ctx.id, "the backend's reply is not RESP");
            return Err(End::Backend);
        };
        pos += used;
        if let Some(reply) = reply {
            if *holding {
                *holding = false;
                let replacement = t.take_rewrite().unwrap_or_default();
                out.get_or_insert_with(Vec::new)
                    .extend_from_slice(&replacement);
                pending_from = Some(pos);
            }
            let verdict = t.on_reply(&reply, &ctx.state.stats);
            scanner.want(t.wanted());
            if verdict == Verdict::Close {
                return Err(End::Untracked);
            }
        }
    }
    if let (Some(buf), Some(from)) = (out.as_mut(), pending_from) {
        buf.extend_from_slice(bytes.get(from..).unwrap_or(&[]));
    }
    Ok(out)
}

/// Phase 2: relays between the client and the backend until either side closes, the lease
/// runs out or the gateway shuts down.
pub(super) async fn phase2<R, W>(
    ctx: &Ctx<'_>,
    reader: &mut R,
    writer: &mut W,
    buf: &mut BytesMut,
    shutdown: &mut watch::Receiver<bool>,
    relay: &mut Relay,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Relay {
        backend_reader,
        backend_writer,
        lease,
        tracker,
    } = relay;
    let tracker = &*tracker;
    let slots = match ctx.state.config.cluster_policy {
        // Boxed: the table's future would otherwise take room in every session's task.
        Some(ClusterPolicy::Enterprise) => {
            match Box::pin(ctx.state.backend.command_arities()).await {
                Ok(commands) => Some(SlotRules::new(commands)),
                Err(e) => {
                    debug!(conn = ctx.id, error = %e, "the backend's COMMAND table is unavailable");
                    return End::Backend;
                }
            }
        }
        _ => None,
    };
    let mut fwd = Forwarder::new(ctx.state.config.profile, slots);
    let mut read_size = ReadSize::default();
    let mut revocations = ctx.state.directory.access_keys().revocations();
    let validator = &ctx.state.validator;
    let mut key_revocations = validator.revocations();
    // Marked changed, so that a key removed before the session started is seen.
    key_revocations.mark_changed();

    let client_to_backend = async {
        loop {
            if !buf.is_empty() {
                let n = match fwd.process(buf, ctx, tracker) {
                    Ok(n) => n,
                    Err(end) => return end,
                };
                let bytes: &[u8] = if fwd.substituted {
                    &fwd.out
                } else {
                    buf.get(..n).unwrap_or(&[])
                };
                if !bytes.is_empty() && backend_writer.write_all(bytes).await.is_err() {
                    return End::Backend;
                }
                fwd.out.clear();
                fwd.substituted = false;
                buf.advance(n);
                if let Some((oid, policy)) = fwd.needs.take() {
                    Box::pin(ctx.create_user(oid, policy)).await;
                    continue;
                }
            }
            if fwd.poisoned {
                // Redis answers the bad request and closes; nothing more is read.
                tokio::time::sleep(PROTOCOL_ERROR_DRAIN).await;
                return End::Protocol;
            }
            let spare = read_size.reserve(buf);
            match reader.read_buf(buf).await {
                Ok(0) | Err(_) => {
                    // The client is done sending: tell Redis, and let its replies drain.
                    let _ = backend_writer.shutdown().await;
                    std::future::pending::<()>().await;
                }
                Ok(n) => read_size.after(n, spare),
            }
        }
    };

    let backend_to_client = async {
        // Small while idle (memory per connection), doubled up to BACKEND_READ whenever a read
        // fills it (throughput under load).
        let mut chunk = vec![0u8; BACKEND_READ_INITIAL];
        let mut scanner = Scanner::new();
        let mut holding = false;
        loop {
            match backend_reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return End::Backend,
                Ok(n) => {
                    let Some(bytes) = chunk.get(..n) else {
                        return End::Backend;
                    };
                    // One lock per read, however many replies it holds; released before
                    // the write to the client.
                    let rewritten = match follow(&mut scanner, bytes, &mut holding, tracker, ctx) {
                        Ok(rewritten) => rewritten,
                        Err(end) => return end,
                    };
                    let bytes = rewritten.as_deref().unwrap_or(bytes);
                    if writer.write_all(bytes).await.is_err() || writer.flush().await.is_err() {
                        return End::Client;
                    }
                    if n == chunk.len() && chunk.len() < BACKEND_READ {
                        chunk.resize((chunk.len() * 2).min(BACKEND_READ), 0);
                    }
                }
            }
        }
    };

    tokio::select! {
        end = client_to_backend => end,
        end = backend_to_client => end,
        end = guard(lease, &mut revocations, &mut key_revocations, validator) => end,
        _ = signalled(shutdown) => End::Shutdown,
    }
}
