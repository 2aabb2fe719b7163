//! One client connection, from its first byte to its close.
//!
//! **Phase 1, before authentication** (at most the gateway's `auth_timeout` after the
//! handshake). The gateway answers locally and opens no backend connection:
//! `AUTH <oid> <token>` and `HELLO <v> AUTH <oid> <token> [SETNAME name]` are validated, `QUIT`
//! and `RESET` answered, anything else gets `-NOAUTH`, all with Redis' own texts and limits for
//! unauthenticated clients. `AUTH <key>`, `AUTH default <key>` and `HELLO <v> AUTH default <key>`
//! are checked against the cache's access keys. A valid one opens a backend connection and
//! sends it the `AUTH`/`HELLO` alone, with the identity's own backend user (named by its object
//! id, created first if need be) and password substituted; Redis' reply goes to the client, and
//! only its `+OK` (or `HELLO`'s map) starts phase 2. A refusal leaves the client unauthenticated.
//!
//! **Phase 2.** Client bytes are framed (never copied per command) and forwarded in one write
//! per read ([`forward`]); only the commands that change what the gateway follows are looked
//! at, and requests the gateway must hold whole are capped. Backend bytes are copied to the
//! client untouched, but framed on the way ([`Scanner`]) so that the
//! [`Tracker`] changes the identity, deadline, key epoch,
//! subscriptions and protocol only on Redis' replies (see [`pending`](super::pending)).
//!
//! A re-`AUTH` with a valid token is substituted, and on Redis' `+OK` the connection takes that
//! token's deadline (whatever the previous one was); an invalid one becomes
//! `AUTH entra-invalid-user <random>` so Redis answers `WRONGPASS` in order and the connection
//! stays as it was (so does every re-`AUTH` while the
//! [refuse-reauth fault](crate::faults::Faults::set_refuse_reauth) is on). At the deadline
//! (`exp` plus the validator's skew) the connection is closed without a word, as Azure does. In
//! RESP2 subscribed mode Redis refuses `AUTH`, so there the deadline does not move.
//!
//! A connection in with a token is closed, without a word, as soon as the signing key that
//! verified that token is removed or replaced under its `kid` (it watches the validator's
//! revocation counter beside its deadline). A connection may have
//! [`MAX_FAILED_AUTH_PER_CONNECTION`] refused `AUTH`s: before authentication the last one closes
//! it; after, further `AUTH`s are refused without being verified (a re-`AUTH` is checked on the
//! runtime thread, where the verified-token memory answers a fleet's shared token).
//!
//! A connection authenticated with an access key (as the backend user `entra-access-key`) has
//! no deadline; it is closed when access keys are disabled. A re-`AUTH` Redis accepts switches
//! it: to a token, and it gets that token's deadline; to a key, and it loses its deadline.
//! After `RESET` it is unauthenticated again, with the pre-authentication deadline.
//!
//! Injected faults end connections abruptly (no reply, no TLS `close_notify`, the TCP
//! connection dropped): every connection at
//! [`close_all_connections`](crate::faults::Faults::close_all_connections), and each
//! authenticated one at a random moment while
//! [`set_random_close`](crate::faults::Faults::set_random_close) is on. When the backend closes
//! its side (a [restart](crate::backend::Backend::restart)), the client's connection is closed.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, Instant};
use tracing::debug;

use super::hello::{parse_hello, Hello};
use super::pending::{lease_for, Grant, Kind, Lease, Switch, Tracker, Verdict, MAX_DEADLINE};
use super::rejections::rejection;
use super::replies::Scanner;
use super::resp::{encode_command, Event, Frame, Limits, RequestParser};
use super::validate::{Rejection, TokenValidator, ValidToken};
use super::{GatewayState, MAX_FAILED_AUTH_PER_CONNECTION};
use crate::backend::{BackendStream, BackendUser, CommandArities};
use crate::directory::AccessPolicy;
use crate::stats::Stats;
use crate::unsupported::Profile;

mod authenticate;
mod ends;
mod forward;
mod relay;
use authenticate::{Authenticated, Ctx, Local, Refused};
use ends::{close_all, key_revoked, keys_disabled, random_close, signalled};
use forward::Forwarder;
use relay::{phase2, Relay};

const WRONGPASS: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";
const NOAUTH_HELLO: &[u8] = b"-NOAUTH HELLO must be called with the client already authenticated, \
otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
select the RESP protocol version at the same time\r\n";
const AUTH_ARITY: &[u8] = b"-ERR wrong number of arguments for 'auth' command\r\n";
const SYNTAX_ERROR: &[u8] = b"-ERR syntax error\r\n";
const OK: &[u8] = b"+OK\r\n";
const RESET: &[u8] = b"+RESET\r\n";
const INVALID_USER: &[u8] = b"entra-invalid-user";

/// The most the gateway reads from a client at a time.
const CLIENT_READ: usize = 16 * 1024;
/// What the gateway reserves for a client read at first (and again once authenticated), before
/// reads show it needs more: an idle connection holds little.
const CLIENT_READ_INITIAL: usize = 512;
/// How much the gateway reads from the backend at a time.
const BACKEND_READ: usize = 32 * 1024;
/// What the gateway reads from the backend at first, before replies show it needs more.
const BACKEND_READ_INITIAL: usize = 512;
/// How long closing a connection (TLS close_notify) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long Redis has to close its side after a request that breaks the protocol.
const PROTOCOL_ERROR_DRAIN: Duration = Duration::from_secs(5);
/// The largest `AUTH`/`HELLO` request the gateway holds (a token is a few KiB).
pub(crate) const MAX_AUTH_REQUEST: usize = 16 * 1024;
/// The largest subscribe or unsubscribe request the gateway holds.
pub(crate) const MAX_SUBSCRIBE_REQUEST: usize = 1024 * 1024;
/// The largest other request the gateway holds (`CLIENT`, `MULTI`, an unsupported command…).
pub(crate) const MAX_HELD_REQUEST: usize = 64 * 1024;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed it or its socket failed.
    Client,
    /// The client sent `QUIT` before authenticating.
    Quit,
    /// The client broke the protocol (or sent a request larger than the gateway holds).
    Protocol,
    /// The backend closed its side (after `QUIT`, a protocol error, …) or failed.
    Backend,
    /// The token expired and was not renewed.
    Expired,
    /// The client did not authenticate in time (after the handshake or a `RESET`).
    AuthTimeout,
    /// Access keys were disabled while the connection was in with one.
    KeysDisabled,
    /// The session's replies could no longer be followed while an `AUTH`, `HELLO` or `RESET`
    /// was sent ([`pending`](super::pending)).
    Untracked,
    /// The client sent [`MAX_FAILED_AUTH_PER_CONNECTION`] refused `AUTH`s before
    /// authenticating.
    AuthFailures,
    /// The signing key that verified the connection's token was removed or replaced.
    KeyRevoked,
    /// The gateway is shutting down.
    Shutdown,
    /// An injected fault closed it ([`Faults::set_random_close`],
    /// [`Faults::close_all_connections`]): dropped without `close_notify`.
    ///
    /// [`Faults::set_random_close`]: crate::faults::Faults::set_random_close
    /// [`Faults::close_all_connections`]: crate::faults::Faults::close_all_connections
    Injected,
}

/// The commands the gateway looks into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Auth,
    Hello,
    Reset,
    Multi,
    Exec,
    Discard,
    Monitor,
    Client,
    Subscribe(Kind),
    Unsubscribe(Kind),
}

fn classify(name: &[u8]) -> Option<Cmd> {
    let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
    match name.len() {
        4 if is(b"AUTH") => Some(Cmd::Auth),
        4 if is(b"EXEC") => Some(Cmd::Exec),
        5 if is(b"HELLO") => Some(Cmd::Hello),
        5 if is(b"RESET") => Some(Cmd::Reset),
        5 if is(b"MULTI") => Some(Cmd::Multi),
        6 if is(b"CLIENT") => Some(Cmd::Client),
        7 if is(b"DISCARD") => Some(Cmd::Discard),
        7 if is(b"MONITOR") => Some(Cmd::Monitor),
        9 if is(b"SUBSCRIBE") => Some(Cmd::Subscribe(Kind::Channel)),
        10 if is(b"PSUBSCRIBE") => Some(Cmd::Subscribe(Kind::Pattern)),
        10 if is(b"SSUBSCRIBE") => Some(Cmd::Subscribe(Kind::Shard)),
        11 if is(b"UNSUBSCRIBE") => Some(Cmd::Unsubscribe(Kind::Channel)),
        12 if is(b"PUNSUBSCRIBE") => Some(Cmd::Unsubscribe(Kind::Pattern)),
        12 if is(b"SUNSUBSCRIBE") => Some(Cmd::Unsubscribe(Kind::Shard)),
        _ => None,
    }
}

/// How much of a request named `name` the gateway holds before forwarding it (`None`: it
/// streams it).
fn hold(name: &[u8], profile: Profile) -> Option<usize> {
    match classify(name) {
        Some(Cmd::Auth | Cmd::Hello) => Some(MAX_AUTH_REQUEST),
        Some(Cmd::Subscribe(_) | Cmd::Unsubscribe(_)) => Some(MAX_SUBSCRIBE_REQUEST),
        Some(_) => Some(MAX_HELD_REQUEST),
        None if profile.may_refuse(name) => Some(MAX_HELD_REQUEST),
        None => None,
    }
}

fn auth_command(user: &BackendUser) -> Vec<u8> {
    auth_command_with(user.name.as_bytes(), user.password.as_bytes())
}

fn auth_command_with(user: &[u8], password: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_command(&mut out, &[&b"AUTH"[..], user, password]);
    out
}

/// How much to reserve for the next client read: [`CLIENT_READ_INITIAL`], doubled whenever a
/// read fills what was reserved, up to [`CLIENT_READ`].
struct ReadSize(usize);

impl Default for ReadSize {
    fn default() -> Self {
        Self(CLIENT_READ_INITIAL)
    }
}

impl ReadSize {
    /// Makes room in `buf` for the next read; returns the room.
    fn reserve(&self, buf: &mut BytesMut) -> usize {
        buf.reserve(self.0);
        buf.capacity() - buf.len()
    }

    /// Notes a read of `n` bytes into `spare` bytes of room.
    fn after(&mut self, n: usize, spare: usize) {
        if n >= spare {
            self.0 = (self.0 * 2).min(CLIENT_READ);
        }
    }
}

/// Serves one client connection (already past the TLS handshake, and split) until it ends.
///
/// The halves, not the stream, are what the task keeps: an async fn keeps its arguments for
/// its whole life, and a TLS stream is over 1 KiB.
pub(crate) async fn serve<S>(
    id: u64,
    mut reader: ReadHalf<S>,
    mut writer: WriteHalf<S>,
    state: GatewayState,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ctx = Ctx {
        id,
        state: &state,
        failed_creation: Mutex::new(None),
        failures: AtomicU32::new(0),
    };
    let mut buf = BytesMut::new();
    let mut close_all_rx = state.faults.watch_close_all();
    // Boxed: the task keeps only the phase it is in (a smaller task per idle session).
    let phase1 = Box::pin(phase1(
        &ctx,
        &mut reader,
        &mut writer,
        &mut buf,
        &mut shutdown,
    ));
    let phase1 = tokio::select! {
        r = phase1 => r,
        _ = close_all(&mut close_all_rx) => Err(End::Injected),
    };
    let end = match phase1 {
        Ok(session) => {
            if buf.is_empty() {
                // Authentication needed a few KiB; an idle session starts again from little.
                buf = BytesMut::new();
            }
            let mut random_close_rx = state.faults.watch_random_close();
            let mut relay = Relay::new(session);
            tokio::select! {
                end = phase2(
                    &ctx,
                    &mut reader,
                    &mut writer,
                    &mut buf,
                    &mut shutdown,
                    &mut relay,
                ) => end,
                _ = close_all(&mut close_all_rx) => End::Injected,
                _ = random_close(&mut random_close_rx) => End::Injected,
            }
        }
        Err(end) => end,
    };
    if end == End::Injected {
        // Abruptly, as a proxy losing its node: no reply, no TLS close_notify, just the TCP
        // close when the stream is dropped.
        Stats::bump(&state.stats.closed_by_fault);
        debug!(conn = id, "closed by an injected fault");
        return;
    }
    if end == End::Backend {
        Stats::bump(&state.stats.closed_by_backend);
    }
    if end == End::Expired {
        Stats::bump(&state.stats.closed_at_expiry);
        debug!(conn = id, "token expired: closing the connection");
    } else if end == End::KeyRevoked {
        Stats::bump(&state.stats.closed_key_revoked);
        debug!(
            conn = id,
            "the token's signing key is no longer trusted: closing the connection"
        );
    } else if end == End::KeysDisabled {
        Stats::bump(&state.stats.closed_keys_disabled);
        debug!(
            conn = id,
            "access keys were disabled: closing the access-key connection"
        );
    } else {
        debug!(conn = id, reason = ?end, "connection closed");
    }
    let mut stream = reader.unsplit(writer);
    let _ = timeout(CLOSE_TIMEOUT, stream.shutdown()).await;
}

/// Writes to the client unless the gateway shuts down first.
async fn write_client<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), End> {
    let write = async {
        writer.write_all(bytes).await?;
        writer.flush().await
    };
    tokio::select! {
        r = write => r.map_err(|_| End::Client),
        _ = signalled(shutdown) => Err(End::Shutdown),
    }
}

/// A session Redis authenticated: its backend connection and what the gateway follows of it.
struct Session {
    backend: BackendStream,
    tracker: Tracker,
}

/// Phase 1: answers locally until the client authenticates and Redis accepts the substituted
/// credentials; closes the connection if that takes longer than the gateway's auth timeout.
async fn phase1<R, W>(
    ctx: &Ctx<'_>,
    reader: &mut R,
    writer: &mut W,
    buf: &mut BytesMut,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Session, End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let deadline = Instant::now() + ctx.state.config.auth_timeout;
    // Read once per backend; without it, every rejected request gets `NOAUTH`.
    let commands = match ctx.state.backend.command_arities().await {
        Ok(commands) => Some(commands),
        Err(e) => {
            debug!(conn = ctx.id, error = %e, "the backend's command table is unavailable");
            None
        }
    };
    let mut parser = RequestParser::new(Limits::UNAUTHENTICATED);
    let mut replies = Vec::new();
    let mut read_size = ReadSize::default();
    loop {
        loop {
            match parser.next_frame(buf) {
                Event::Frame(frame) => {
                    let len = frame.byte_len();
                    let local = ctx
                        .local(&frame, buf.get(..len).unwrap_or(&[]), commands.as_deref())
                        .await;
                    if let Local::NeedsUser(oid, policy) = local {
                        // Read the request again once the user exists (or failed to).
                        tokio::select! {
                            _ = Box::pin(ctx.create_user(oid, policy)) => {}
                            _ = sleep_until(deadline) => return Err(End::AuthTimeout),
                        }
                        continue;
                    }
                    buf.advance(len);
                    match local {
                        Local::NeedsUser(..) => {}
                        Local::Reply(reply) => {
                            replies.extend_from_slice(&reply);
                            if ctx.failures.load(Ordering::Relaxed)
                                >= MAX_FAILED_AUTH_PER_CONNECTION
                            {
                                write_client(writer, &replies, shutdown).await?;
                                return Err(End::AuthFailures);
                            }
                        }
                        Local::Nothing => {}
                        Local::Quit => {
                            replies.extend_from_slice(OK);
                            write_client(writer, &replies, shutdown).await?;
                            return Err(End::Quit);
                        }
                        Local::Authenticated(auth) => {
                            if !replies.is_empty() {
                                write_client(writer, &replies, shutdown).await?;
                                replies.clear();
                            }
                            let first = tokio::select! {
                                r = Box::pin(first_auth(ctx, auth)) => r,
                                _ = sleep_until(deadline) => return Err(End::AuthTimeout),
                            };
                            let (reply, session) = first?;
                            write_client(writer, &reply, shutdown).await?;
                            if let Some(session) = session {
                                return Ok(session);
                            }
                        }
                    }
                }
                Event::Incomplete | Event::Partial(_) => break,
                Event::Error(e) => {
                    debug!(conn = ctx.id, error = %e, "protocol error before authentication");
                    replies.extend_from_slice(&e.reply());
                    write_client(writer, &replies, shutdown).await?;
                    return Err(End::Protocol);
                }
            }
        }
        if !replies.is_empty() {
            write_client(writer, &replies, shutdown).await?;
            replies.clear();
        }
        let spare = read_size.reserve(buf);
        tokio::select! {
            read = reader.read_buf(buf) => match read {
                Ok(0) | Err(_) => return Err(End::Client),
                Ok(n) => read_size.after(n, spare),
            },
            _ = sleep_until(deadline) => {
                debug!(conn = ctx.id, "no authentication in time: closing");
                return Err(End::AuthTimeout);
            }
            _ = signalled(shutdown) => return Err(End::Shutdown),
        }
    }
}

/// Opens the backend connection and sends the substituted `AUTH`/`HELLO` alone: Redis' reply
/// (to pass on to the client), and the session if Redis accepted it. Nothing else reaches
/// Redis before it has.
async fn first_auth(ctx: &Ctx<'_>, auth: Authenticated) -> Result<(Vec<u8>, Option<Session>), End> {
    let mut backend = match ctx.state.backend.connect().await {
        Ok(backend) => backend,
        Err(e) => {
            debug!(conn = ctx.id, error = %e, "the backend is unreachable");
            return Ok((
                b"-ERR the emulator's Redis backend is unreachable\r\n".to_vec(),
                None,
            ));
        }
    };
    backend
        .write_all(&auth.command)
        .await
        .map_err(|_| End::Backend)?;
    let mut scanner = Scanner::new();
    let mut bytes = Vec::with_capacity(BACKEND_READ_INITIAL);
    let mut chunk = vec![0u8; BACKEND_READ_INITIAL];
    let reply = loop {
        let n = backend.read(&mut chunk).await.map_err(|_| End::Backend)?;
        let got = chunk
            .get(..n)
            .filter(|c| !c.is_empty())
            .ok_or(End::Backend)?;
        let (used, reply) = scanner.next(got).map_err(|_| End::Backend)?;
        bytes.extend_from_slice(got);
        if let Some(reply) = reply {
            if used != got.len() {
                // Redis answered more than it was asked.
                return Err(End::Backend);
            }
            break reply;
        }
        if bytes.len() > MAX_HELD_REQUEST {
            return Err(End::Backend);
        }
    };
    let switch = auth.granted.switch(auth.proto.is_some(), auth.proto);
    let accepted = if switch.hello {
        reply.value.is_aggregate()
    } else {
        reply.value.is_status(b"OK")
    };
    if !accepted {
        debug!(
            conn = ctx.id,
            user = %auth.granted.user.name,
            "Redis refused the substituted credentials: the client stays unauthenticated"
        );
        ctx.state.stats.refused("backend_refused");
        return Ok((bytes, None));
    }
    auth.granted.log(ctx.id, "authenticated");
    Stats::bump(&ctx.state.stats.auth_succeeded);
    let skew = ctx.state.validator.skew();
    let tracker = Tracker::new(
        ctx.id,
        lease_for(&auth.granted.grant, skew),
        auth.proto.unwrap_or(2),
        skew,
        ctx.state.config.auth_timeout,
    );
    Ok((bytes, Some(Session { backend, tracker })))
}
