//! One client connection, from its first byte to its close.
//!
//! **Phase 1, before authentication.** The gateway answers locally and opens no backend
//! connection: `AUTH <oid> <token>` and `HELLO <v> AUTH <oid> <token> [SETNAME name]` are
//! validated, `QUIT` and `RESET` answered, anything else gets `-NOAUTH`, all with Redis' own
//! texts and limits for unauthenticated clients. `AUTH <key>`, `AUTH default <key>` and
//! `HELLO <v> AUTH default <key>` are checked against the cache's access keys.
//!
//! **Phase 2, after a valid token.** The gateway connects to the backend and sends it the
//! client's `AUTH`/`HELLO` with the identity's access-policy user and password substituted, so
//! Redis itself answers, in order, followed by whatever the client pipelined behind it. From then
//! on client bytes are framed (never copied per command) and forwarded in one write per read;
//! only `AUTH`, `HELLO` and the commands that change the subscription state are looked at.
//! Backend bytes are copied to the client untouched.
//!
//! A re-`AUTH` with a valid token moves the connection's deadline to that token's `exp` (if
//! later); an invalid one becomes `AUTH entra-invalid-user <random>` so Redis answers
//! `WRONGPASS` in order and the connection stays as it was (so does every re-`AUTH` while the
//! [refuse-reauth fault](crate::faults::Faults::set_refuse_reauth) is on). At the deadline (`exp` plus the
//! validator's skew) the connection is closed without a word, as Azure does. In RESP2 subscribed
//! mode Redis refuses `AUTH`, so there the deadline does not move.
//!
//! A connection authenticated with an access key (as the backend user `entra-access-key`) has
//! no deadline; it is closed when access keys are disabled. A re-`AUTH` switches it: to a token,
//! and it gets that token's deadline; to a key, and it loses its deadline.
//!
//! A connection in with a token is closed, without a word, as soon as the signing key that
//! verified that token is removed or replaced under its `kid` (it watches the validator's
//! revocation counter beside its deadline). A connection may have
//! [`MAX_FAILED_AUTH_PER_CONNECTION`] refused `AUTH`s: before authentication the last one closes
//! it; after, further `AUTH`s are refused without being verified.
//!
//! Injected faults end connections abruptly (no reply, no TLS `close_notify`, the TCP
//! connection dropped): every connection at
//! [`close_all_connections`](crate::faults::Faults::close_all_connections), and each
//! authenticated one at a random moment while
//! [`set_random_close`](crate::faults::Faults::set_random_close) is on. When the backend closes
//! its side (a [restart](crate::backend::Backend::restart)), the client's connection is closed.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, Instant};
use tracing::debug;

use super::resp::{encode_command, Event, Frame, Limits, RequestParser};
use super::validate::{Rejection, TokenValidator, ValidToken};
use super::{GatewayState, MAX_FAILED_AUTH_PER_CONNECTION};
use crate::backend::BackendUser;
use crate::stats::Stats;

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

/// How much the gateway reads from a client at a time.
const CLIENT_READ: usize = 16 * 1024;
/// How much the gateway reads from the backend at a time.
const BACKEND_READ: usize = 32 * 1024;
/// What the gateway reads from the backend at first, before replies show it needs more.
const BACKEND_READ_INITIAL: usize = 2 * 1024;
/// How long closing a connection (TLS close_notify) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The farthest deadline the gateway schedules.
const MAX_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed it or its socket failed.
    Client,
    /// The client sent `QUIT` before authenticating.
    Quit,
    /// The client broke the protocol before authenticating.
    Protocol,
    /// The client sent [`MAX_FAILED_AUTH_PER_CONNECTION`] refused `AUTH`s before
    /// authenticating.
    AuthFailures,
    /// The backend closed its side (after `QUIT`, a protocol error, …) or failed.
    Backend,
    /// The token expired and was not renewed.
    Expired,
    /// Access keys were disabled while the connection was in with one.
    KeysDisabled,
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
    Subscribe(Kind),
    Unsubscribe(Kind),
}

/// The three kinds of subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Channel,
    Pattern,
    Shard,
}

fn classify(name: &[u8]) -> Option<Cmd> {
    let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
    match name.len() {
        4 if is(b"AUTH") => Some(Cmd::Auth),
        5 if is(b"HELLO") => Some(Cmd::Hello),
        5 if is(b"RESET") => Some(Cmd::Reset),
        9 if is(b"SUBSCRIBE") => Some(Cmd::Subscribe(Kind::Channel)),
        10 if is(b"PSUBSCRIBE") => Some(Cmd::Subscribe(Kind::Pattern)),
        10 if is(b"SSUBSCRIBE") => Some(Cmd::Subscribe(Kind::Shard)),
        11 if is(b"UNSUBSCRIBE") => Some(Cmd::Unsubscribe(Kind::Channel)),
        12 if is(b"PUNSUBSCRIBE") => Some(Cmd::Unsubscribe(Kind::Pattern)),
        12 if is(b"SUNSUBSCRIBE") => Some(Cmd::Unsubscribe(Kind::Shard)),
        _ => None,
    }
}

fn intercepted(name: &[u8]) -> bool {
    classify(name).is_some()
}

/// A `HELLO` request, checked as Redis' `helloCommand` checks it before authenticating.
struct Hello<'a> {
    /// The version argument as sent (validated: 2 or 3).
    version_arg: Option<&'a [u8]>,
    version: Option<u8>,
    auth: Option<(&'a [u8], &'a [u8])>,
    setname: Option<&'a [u8]>,
}

/// Why Redis would refuse a `HELLO` before looking at its credentials.
enum HelloError<'a> {
    NotInteger(&'a [u8]),
    NoProto(&'a [u8]),
    Syntax(&'a [u8], &'a [u8]),
    BadName(&'a [u8], &'a [u8]),
}

impl HelloError<'_> {
    /// Redis' reply.
    fn reply(&self) -> Vec<u8> {
        match self {
            Self::NotInteger(_) => {
                b"-ERR Protocol version is not an integer or out of range\r\n".to_vec()
            }
            Self::NoProto(_) => b"-NOPROTO unsupported protocol version\r\n".to_vec(),
            Self::Syntax(_, opt) => {
                let mut out = b"-ERR Syntax error in HELLO option '".to_vec();
                out.extend(opt.iter().map(|&b| match b {
                    b'\r' | b'\n' => b' ',
                    other => other,
                }));
                out.extend_from_slice(b"'\r\n");
                out
            }
            Self::BadName(..) => {
                b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
                    .to_vec()
            }
        }
    }

    /// A `HELLO` without credentials that makes Redis give the same error, in order.
    fn reproduction(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::NotInteger(v) | Self::NoProto(v) => encode_command(&mut out, &[&b"HELLO"[..], v]),
            Self::Syntax(v, opt) => encode_command(&mut out, &[&b"HELLO"[..], v, opt]),
            Self::BadName(v, name) => {
                encode_command(&mut out, &[&b"HELLO"[..], v, b"SETNAME", name])
            }
        }
        out
    }
}

fn parse_hello<'a>(args: &'a [Cow<'a, [u8]>]) -> Result<Hello<'a>, HelloError<'a>> {
    let mut hello = Hello {
        version_arg: None,
        version: None,
        auth: None,
        setname: None,
    };
    let Some(version_arg) = args.get(1).map(|a| a.as_ref()) else {
        return Ok(hello);
    };
    let version = match super::resp::string2ll(version_arg) {
        Some(v) => v,
        None => return Err(HelloError::NotInteger(version_arg)),
    };
    if !(2..=3).contains(&version) {
        return Err(HelloError::NoProto(version_arg));
    }
    hello.version_arg = Some(version_arg);
    hello.version = Some(version as u8);
    let mut j = 2;
    while let Some(opt) = args.get(j).map(|a| a.as_ref()) {
        let more = args.len() - 1 - j;
        if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            hello.auth = Some((&args[j + 1], &args[j + 2]));
            j += 3;
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            let name: &[u8] = &args[j + 1];
            if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
                return Err(HelloError::BadName(version_arg, name));
            }
            hello.setname = Some(name);
            j += 2;
        } else {
            return Err(HelloError::Syntax(version_arg, opt));
        }
    }
    Ok(hello)
}

impl Hello<'_> {
    /// The same `HELLO` with other credentials.
    fn with_credentials(&self, user: &[u8], password: &[u8]) -> Vec<u8> {
        let mut args: Vec<&[u8]> = vec![b"HELLO"];
        args.extend(self.version_arg);
        args.extend([&b"AUTH"[..], user, password]);
        if let Some(name) = self.setname {
            args.extend([&b"SETNAME"[..], name]);
        }
        let mut out = Vec::new();
        encode_command(&mut out, &args);
        out
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

/// A password nobody has, for refused re-authentications.
fn random_password() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// When a connection authenticated with a token expiring at `exp` must close.
fn deadline_for(exp: u64, skew: Duration) -> Instant {
    let left = UNIX_EPOCH
        .checked_add(Duration::from_secs(exp))
        .and_then(|t| t.checked_add(skew))
        .map(|t| {
            t.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
        .unwrap_or(MAX_DEADLINE)
        .min(MAX_DEADLINE);
    Instant::now() + left
}

/// Resolves when access keys are disabled after `epoch` (never when `epoch` is `None`: the
/// connection is not in with a key).
async fn keys_disabled(rx: &mut watch::Receiver<u64>, epoch: Option<u64>) {
    match epoch {
        Some(epoch) => {
            if rx.wait_for(|now| *now != epoch).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Resolves when the signing key of generation `generation` (the one that verified the
/// connection's token) is no longer trusted; never for a connection in with an access key
/// (`None`). `rx` is the validator's revocation counter, marked changed when the session
/// starts so that a key removed before is seen.
async fn key_revoked(
    rx: &mut watch::Receiver<u64>,
    validator: &TokenValidator,
    generation: Option<u64>,
) {
    let Some(generation) = generation else {
        return std::future::pending::<()>().await;
    };
    loop {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        if !validator.is_trusted(generation) {
            return;
        }
    }
}

/// Resolves when [`Faults::close_all_connections`](crate::faults::Faults::close_all_connections)
/// is called (never if the faults are gone).
async fn close_all(rx: &mut watch::Receiver<u64>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves at a random moment while the random-close fault is on: after a delay drawn from an
/// exponential distribution with the rate in force, drawn again whenever the rate changes.
async fn random_close(rx: &mut watch::Receiver<f64>) {
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
async fn signalled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// What a successful `AUTH` proved.
#[derive(Debug, Clone)]
enum Grant {
    /// A valid Entra token.
    Token(ValidToken),
    /// An access key, while keys were enabled at this revocation epoch.
    AccessKey { epoch: u64 },
}

/// A successful authentication, and what it lets the connection do.
struct Granted {
    grant: Grant,
    /// The backend user to substitute.
    user: BackendUser,
    /// Whether Redis lets that user subscribe.
    pubsub: bool,
}

impl Granted {
    /// One debug line: who got in, as which backend user, until when. Never the credential.
    fn log(&self, conn: u64, what: &str) {
        match &self.grant {
            Grant::Token(token) => debug!(
                conn,
                oid = %token.oid,
                policy = token.policy.name(),
                exp = token.exp,
                "{what}"
            ),
            Grant::AccessKey { .. } => {
                debug!(conn, user = %self.user.name, "{what} with an access key")
            }
        }
    }
}

/// A successful authentication.
struct Authenticated {
    /// What to send the backend in place of the client's request.
    command: Vec<u8>,
    granted: Granted,
    /// The protocol the client asked for (`HELLO`), if it did.
    proto: Option<u8>,
}

/// What phase 1 does with a request.
enum Local {
    Reply(Cow<'static, [u8]>),
    Nothing,
    Quit,
    Authenticated(Authenticated),
}

/// What a connection needs from the gateway.
struct Ctx<'a> {
    id: u64,
    state: &'a GatewayState,
    /// Refused `AUTH`s so far (bounded by [`MAX_FAILED_AUTH_PER_CONNECTION`]).
    failures: AtomicU32,
}

impl Ctx<'_> {
    /// Checks `AUTH <user> <password>`: an access key when the user is `default`, else a
    /// token; finds the backend user to substitute.
    async fn authenticate(&self, user: &[u8], password: &[u8]) -> Result<Granted, ()> {
        if user == b"default" {
            return self.authenticate_key(password);
        }
        if self.too_many_failures() {
            return Err(());
        }
        match self.state.validator.check(user, password).await {
            Ok(valid) => match self.state.backend.user_for(&valid.policy) {
                Some(backend_user) => Ok(Granted {
                    pubsub: self.state.backend.allows_pubsub(&valid.policy),
                    grant: Grant::Token(valid),
                    user: backend_user,
                }),
                None => {
                    debug!(
                        conn = self.id,
                        policy = valid.policy.name(),
                        "AUTH refused: the backend has no user for the policy"
                    );
                    Stats::bump(&self.state.stats.auth_failed);
                    Err(())
                }
            },
            Err(rejection) => {
                self.refused(&rejection);
                Err(())
            }
        }
    }

    /// Checks an access key (`AUTH <key>`, `AUTH default <key>`).
    fn authenticate_key(&self, key: &[u8]) -> Result<Granted, ()> {
        if self.too_many_failures() {
            return Err(());
        }
        match self.state.directory.access_keys().check(key) {
            Ok(epoch) => Ok(Granted {
                grant: Grant::AccessKey { epoch },
                user: self.state.backend.access_key_user(),
                pubsub: true,
            }),
            Err(rejection) => {
                self.refused(&rejection);
                Err(())
            }
        }
    }

    /// Whether the re-AUTH fault is on ([`Faults::set_refuse_reauth`]); counts the refusal.
    ///
    /// [`Faults::set_refuse_reauth`]: crate::faults::Faults::set_refuse_reauth
    fn reauth_refused(&self) -> bool {
        let refused = self.state.faults.refuse_reauth();
        if refused {
            debug!(
                conn = self.id,
                "re-AUTH refused: the refuse-reauth fault is on"
            );
            Stats::bump(&self.state.stats.auth_failed);
        }
        refused
    }

    fn refused(&self, rejection: &Rejection) {
        debug!(conn = self.id, reason = %rejection, "AUTH refused");
        Stats::bump(&self.state.stats.auth_failed);
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the connection used up its refused `AUTH`s: further ones are refused unchecked
    /// (and, before authentication, the connection is closed).
    fn too_many_failures(&self) -> bool {
        let failed = self.failures.load(Ordering::Relaxed) >= MAX_FAILED_AUTH_PER_CONNECTION;
        if failed {
            debug!(
                conn = self.id,
                "AUTH refused unchecked: too many refused AUTHs on this connection"
            );
            Stats::bump(&self.state.stats.auth_failed);
        }
        failed
    }

    /// Phase 1: answers a request of an unauthenticated client.
    async fn local(&self, frame: &Frame, bytes: &[u8]) -> Local {
        let Some(name) = frame.name(bytes) else {
            return Local::Nothing;
        };
        match classify(name) {
            Some(Cmd::Auth) => {
                let args = frame.args(bytes);
                match args.len() {
                    0 | 1 => Local::Reply(Cow::Borrowed(AUTH_ARITY)),
                    2 | 3 => {
                        let granted = match args.len() {
                            2 => self.authenticate_key(&args[1]),
                            _ => self.authenticate(&args[1], &args[2]).await,
                        };
                        match granted {
                            Ok(granted) => Local::Authenticated(Authenticated {
                                command: auth_command(&granted.user),
                                granted,
                                proto: None,
                            }),
                            Err(()) => Local::Reply(Cow::Borrowed(WRONGPASS)),
                        }
                    }
                    _ => Local::Reply(Cow::Borrowed(SYNTAX_ERROR)),
                }
            }
            Some(Cmd::Hello) => {
                let args = frame.args(bytes);
                match parse_hello(&args) {
                    Err(e) => Local::Reply(Cow::Owned(e.reply())),
                    Ok(Hello { auth: None, .. }) => Local::Reply(Cow::Borrowed(NOAUTH_HELLO)),
                    Ok(hello) => {
                        let Some((user, token)) = hello.auth else {
                            return Local::Reply(Cow::Borrowed(NOAUTH_HELLO));
                        };
                        match self.authenticate(user, token).await {
                            Ok(granted) => Local::Authenticated(Authenticated {
                                command: hello.with_credentials(
                                    granted.user.name.as_bytes(),
                                    granted.user.password.as_bytes(),
                                ),
                                granted,
                                proto: hello.version,
                            }),
                            Err(()) => Local::Reply(Cow::Borrowed(WRONGPASS)),
                        }
                    }
                }
            }
            Some(Cmd::Reset) => Local::Reply(Cow::Borrowed(RESET)),
            _ if name.eq_ignore_ascii_case(b"QUIT") => Local::Quit,
            _ => Local::Reply(Cow::Borrowed(NOAUTH)),
        }
    }
}

/// The subscriptions a connection asked for.
#[derive(Debug, Default)]
struct Subscriptions {
    channels: HashSet<Vec<u8>>,
    patterns: HashSet<Vec<u8>>,
    shard: HashSet<Vec<u8>>,
}

impl Subscriptions {
    fn of(&mut self, kind: Kind) -> &mut HashSet<Vec<u8>> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shard,
        }
    }

    fn any(&self) -> bool {
        !(self.channels.is_empty() && self.patterns.is_empty() && self.shard.is_empty())
    }

    fn clear(&mut self) {
        self.channels.clear();
        self.patterns.clear();
        self.shard.clear();
    }
}

/// Phase 2: the client-to-backend direction of an authenticated connection.
struct Forwarder {
    parser: RequestParser,
    /// After a protocol error: forward everything and let Redis answer and close.
    passthrough: bool,
    /// Bytes to write when a request was substituted (otherwise the read buffer is written).
    out: Vec<u8>,
    deadline: Instant,
    exp: u64,
    /// Set while the connection is in with an access key: the revocation epoch it saw.
    key_epoch: Option<u64>,
    /// Set while the connection is in with a token: the generation of the signing key that
    /// verified it.
    key_generation: Option<u64>,
    /// Whether the connection's backend user may subscribe.
    pubsub: bool,
    proto: u8,
    subscriptions: Subscriptions,
}

/// What to do with an intercepted request.
enum Action {
    Forward,
    Substitute(Vec<u8>),
}

impl Forwarder {
    fn new(granted: &Granted, proto: u8, skew: Duration) -> Self {
        let mut fwd = Self {
            parser: RequestParser::new(Limits::AUTHENTICATED),
            passthrough: false,
            out: Vec::new(),
            deadline: Instant::now() + MAX_DEADLINE,
            exp: 0,
            key_epoch: None,
            key_generation: None,
            pubsub: granted.pubsub,
            proto,
            subscriptions: Subscriptions::default(),
        };
        fwd.switch_to(&granted.grant, skew);
        fwd
    }

    /// Takes on the deadline (or the key epoch) of a new grant.
    fn switch_to(&mut self, grant: &Grant, skew: Duration) {
        match grant {
            Grant::Token(token) => {
                self.key_generation = Some(token.key_generation);
                let deadline = deadline_for(token.exp, skew);
                if self.key_epoch.take().is_some() || deadline > self.deadline || self.exp == 0 {
                    self.deadline = deadline;
                    self.exp = token.exp;
                }
            }
            Grant::AccessKey { epoch } => {
                self.key_generation = None;
                self.key_epoch = Some(*epoch);
                self.deadline = Instant::now() + MAX_DEADLINE;
                self.exp = 0;
            }
        }
    }

    /// Whether Redis refuses `AUTH`/`HELLO` now (RESP2 subscribed context).
    fn pubsub_context(&self) -> bool {
        self.proto == 2 && self.subscriptions.any()
    }

    /// Frames `buf` and returns how many bytes of it are ready to go to the backend. Those are
    /// `buf[..n]` unless a request was substituted, in which case they are in `self.out`.
    async fn process(&mut self, buf: &[u8], ctx: &Ctx<'_>) -> usize {
        if self.passthrough {
            return buf.len();
        }
        let mut pos = 0;
        let mut copied = 0;
        loop {
            let rest = buf.get(pos..).unwrap_or(&[]);
            match self.parser.next(rest, intercepted) {
                Event::Partial(n) => pos += n,
                Event::Frame(frame) => {
                    let len = frame.byte_len();
                    let bytes = rest.get(..len).unwrap_or(&[]);
                    let cmd = frame.name(bytes).and_then(classify);
                    if let Some(cmd) = cmd {
                        if let Action::Substitute(with) =
                            self.intercept(cmd, &frame, bytes, ctx).await
                        {
                            self.out
                                .extend_from_slice(buf.get(copied..pos).unwrap_or(&[]));
                            self.out.extend_from_slice(&with);
                            copied = pos + len;
                        }
                    }
                    pos += len;
                }
                Event::Incomplete => break,
                Event::Error(e) => {
                    // Redis will see the same bytes, answer with the same error and close.
                    debug!(conn = ctx.id, error = %e, "protocol error; the backend will answer it");
                    self.passthrough = true;
                    pos = buf.len();
                    break;
                }
            }
        }
        if !self.out.is_empty() {
            self.out
                .extend_from_slice(buf.get(copied..pos).unwrap_or(&[]));
        }
        pos
    }

    async fn intercept(&mut self, cmd: Cmd, frame: &Frame, bytes: &[u8], ctx: &Ctx<'_>) -> Action {
        match cmd {
            Cmd::Auth => {
                let args = frame.args(bytes);
                match args.len() {
                    // Redis answers the arity error itself.
                    0 | 1 => Action::Forward,
                    2 | 3 if ctx.reauth_refused() => Action::Substitute(self.invalid_auth()),
                    2 | 3 => {
                        let granted = match args.len() {
                            2 => ctx.authenticate_key(&args[1]),
                            _ => ctx.authenticate(&args[1], &args[2]).await,
                        };
                        match granted {
                            Ok(granted) => {
                                self.reauthenticated(&granted, None, ctx);
                                Action::Substitute(auth_command(&granted.user))
                            }
                            Err(()) => Action::Substitute(self.invalid_auth()),
                        }
                    }
                    // Redis answers `-ERR syntax error`; keep the arguments from it.
                    _ => {
                        let mut out = Vec::new();
                        encode_command(&mut out, &[&b"AUTH"[..], INVALID_USER, b"-", b"-"]);
                        Action::Substitute(out)
                    }
                }
            }
            Cmd::Hello => {
                let args = frame.args(bytes);
                match parse_hello(&args) {
                    Err(e) => Action::Substitute(e.reproduction()),
                    Ok(hello) => match hello.auth {
                        None => {
                            if let (Some(v), false) = (hello.version, self.pubsub_context()) {
                                self.proto = v;
                            }
                            Action::Forward
                        }
                        Some(_) if ctx.reauth_refused() => Action::Substitute(
                            hello.with_credentials(INVALID_USER, random_password().as_bytes()),
                        ),
                        Some((user, token)) => match ctx.authenticate(user, token).await {
                            Ok(granted) => {
                                self.reauthenticated(&granted, hello.version, ctx);
                                Action::Substitute(hello.with_credentials(
                                    granted.user.name.as_bytes(),
                                    granted.user.password.as_bytes(),
                                ))
                            }
                            Err(()) => Action::Substitute(
                                hello.with_credentials(INVALID_USER, random_password().as_bytes()),
                            ),
                        },
                    },
                }
            }
            Cmd::Subscribe(kind) => {
                if self.pubsub {
                    let args = frame.args(bytes);
                    let set = self.subscriptions.of(kind);
                    for channel in args.iter().skip(1) {
                        set.insert(channel.to_vec());
                    }
                }
                Action::Forward
            }
            Cmd::Unsubscribe(kind) => {
                let args = frame.args(bytes);
                let set = self.subscriptions.of(kind);
                if args.len() <= 1 {
                    set.clear();
                } else {
                    for channel in args.iter().skip(1) {
                        set.remove(channel.as_ref());
                    }
                }
                Action::Forward
            }
            Cmd::Reset => {
                self.subscriptions.clear();
                self.proto = 2;
                Action::Forward
            }
        }
    }

    fn invalid_auth(&self) -> Vec<u8> {
        auth_command_with(INVALID_USER, random_password().as_bytes())
    }

    /// A valid token or key arrived on an authenticated connection.
    fn reauthenticated(&mut self, granted: &Granted, proto: Option<u8>, ctx: &Ctx<'_>) {
        if self.pubsub_context() {
            debug!(
                conn = ctx.id,
                "re-AUTH in RESP2 subscribed mode: Redis refuses it, the deadline stays"
            );
            Stats::bump(&ctx.state.stats.auth_failed);
            return;
        }
        Stats::bump(&ctx.state.stats.auth_succeeded);
        self.switch_to(&granted.grant, ctx.state.validator.skew());
        self.pubsub = granted.pubsub;
        if let Some(v) = proto {
            self.proto = v;
        }
        granted.log(ctx.id, "re-authenticated");
    }
}

/// Serves one client connection (already past the TLS handshake) until it ends.
pub(crate) async fn serve<S>(
    id: u64,
    stream: S,
    state: GatewayState,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ctx = Ctx {
        id,
        state: &state,
        failures: AtomicU32::new(0),
    };
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(CLIENT_READ);
    let mut close_all_rx = state.faults.watch_close_all();
    let phase1 = phase1(&ctx, &mut reader, &mut writer, &mut buf, &mut shutdown);
    let phase1 = tokio::select! {
        r = phase1 => r,
        _ = close_all(&mut close_all_rx) => Err(End::Injected),
    };
    let end = match phase1 {
        Ok(auth) => {
            let mut random_close_rx = state.faults.watch_random_close();
            tokio::select! {
                end = phase2(
                    &ctx,
                    &mut reader,
                    &mut writer,
                    &mut buf,
                    &mut shutdown,
                    auth,
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

/// Phase 1: answers locally until the client authenticates.
async fn phase1<R, W>(
    ctx: &Ctx<'_>,
    reader: &mut R,
    writer: &mut W,
    buf: &mut BytesMut,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Authenticated, End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut parser = RequestParser::new(Limits::UNAUTHENTICATED);
    let mut replies = Vec::new();
    loop {
        loop {
            match parser.next_frame(buf) {
                Event::Frame(frame) => {
                    let len = frame.byte_len();
                    let local = ctx.local(&frame, buf.get(..len).unwrap_or(&[])).await;
                    buf.advance(len);
                    match local {
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
                            auth.granted.log(ctx.id, "authenticated");
                            Stats::bump(&ctx.state.stats.auth_succeeded);
                            if !replies.is_empty() {
                                write_client(writer, &replies, shutdown).await?;
                            }
                            return Ok(auth);
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
        buf.reserve(CLIENT_READ);
        tokio::select! {
            read = reader.read_buf(buf) => match read {
                Ok(0) | Err(_) => return Err(End::Client),
                Ok(_) => {}
            },
            _ = signalled(shutdown) => return Err(End::Shutdown),
        }
    }
}

/// Phase 2: relays between the client and the backend until either side closes, the token
/// expires or the gateway shuts down.
async fn phase2<R, W>(
    ctx: &Ctx<'_>,
    reader: &mut R,
    writer: &mut W,
    buf: &mut BytesMut,
    shutdown: &mut watch::Receiver<bool>,
    auth: Authenticated,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let backend = match ctx.state.backend.connect().await {
        Ok(backend) => backend,
        Err(e) => {
            debug!(conn = ctx.id, error = %e, "the backend is unreachable");
            let _ = write_client(
                writer,
                b"-ERR the emulator's Redis backend is unreachable\r\n",
                shutdown,
            )
            .await;
            return End::Backend;
        }
    };
    let (mut backend_reader, mut backend_writer) = tokio::io::split(backend);
    let skew = ctx.state.validator.skew();
    let mut fwd = Forwarder::new(&auth.granted, auth.proto.unwrap_or(2), skew);
    let mut revocations = ctx.state.directory.access_keys().revocations();
    let validator = &ctx.state.validator;
    let mut key_revocations = validator.revocations();
    key_revocations.mark_changed();

    // The substituted AUTH/HELLO, then whatever the client pipelined behind it.
    let mut first = auth.command;
    let n = fwd.process(buf, ctx).await;
    if fwd.out.is_empty() {
        first.extend_from_slice(buf.get(..n).unwrap_or(&[]));
    } else {
        first.append(&mut fwd.out);
    }
    buf.advance(n);

    let client_to_backend = async {
        let (deadline, epoch, signer) = (fwd.deadline, fwd.key_epoch, fwd.key_generation);
        tokio::select! {
            r = backend_writer.write_all(&first) => if r.is_err() { return End::Backend },
            _ = sleep_until(deadline) => return End::Expired,
            _ = keys_disabled(&mut revocations, epoch) => return End::KeysDisabled,
            _ = key_revoked(&mut key_revocations, validator, signer) => return End::KeyRevoked,
        }
        drop(first);
        loop {
            buf.reserve(CLIENT_READ);
            let (deadline, epoch, signer) = (fwd.deadline, fwd.key_epoch, fwd.key_generation);
            let read = tokio::select! {
                read = reader.read_buf(buf) => read,
                _ = sleep_until(deadline) => return End::Expired,
                _ = keys_disabled(&mut revocations, epoch) => return End::KeysDisabled,
                _ = key_revoked(&mut key_revocations, validator, signer) => {
                    return End::KeyRevoked
                }
            };
            match read {
                Ok(0) | Err(_) => {
                    // The client is done sending: tell Redis, and let its replies drain.
                    let _ = backend_writer.shutdown().await;
                    tokio::select! {
                        _ = sleep_until(fwd.deadline) => return End::Expired,
                        _ = keys_disabled(&mut revocations, fwd.key_epoch) => {
                            return End::KeysDisabled
                        }
                        _ = key_revoked(&mut key_revocations, validator, fwd.key_generation) => {
                            return End::KeyRevoked
                        }
                    }
                }
                Ok(_) => {}
            }
            let n = fwd.process(buf, ctx).await;
            let (deadline, epoch, signer) = (fwd.deadline, fwd.key_epoch, fwd.key_generation);
            let bytes: &[u8] = if fwd.out.is_empty() {
                buf.get(..n).unwrap_or(&[])
            } else {
                &fwd.out
            };
            if !bytes.is_empty() {
                tokio::select! {
                    r = backend_writer.write_all(bytes) => if r.is_err() { return End::Backend },
                    _ = sleep_until(deadline) => return End::Expired,
                    _ = keys_disabled(&mut revocations, epoch) => return End::KeysDisabled,
                    _ = key_revoked(&mut key_revocations, validator, signer) => {
                        return End::KeyRevoked
                    }
                }
            }
            fwd.out.clear();
            buf.advance(n);
        }
    };

    let backend_to_client = async {
        // Small while idle (memory per connection), doubled up to BACKEND_READ whenever a read
        // fills it (throughput under load).
        let mut chunk = vec![0u8; BACKEND_READ_INITIAL];
        loop {
            match backend_reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return End::Backend,
                Ok(n) => {
                    let Some(bytes) = chunk.get(..n) else {
                        return End::Backend;
                    };
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
        _ = signalled(shutdown) => End::Shutdown,
    }
}
