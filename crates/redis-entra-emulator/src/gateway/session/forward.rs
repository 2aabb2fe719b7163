//! Phase 2's request side: frames what the client sends, decides what reaches Redis
//! (substituted `AUTH`/`HELLO`, Azure's unsupported commands renamed away) and records, for the
//! [`Tracker`], what each request's reply will tell.

use std::sync::Mutex;

use super::super::pending::{Expect, Tracker};
use super::super::rejections::{unknown_command, unknown_subcommand};
use super::super::resp::{
    encode_command, leading_args, Event, Frame, Limits, ProtocolError, RequestParser,
};
use super::super::slots::{Block, Need, SlotRules, MAX_KEYED_REQUEST};
use super::{
    auth_command, auth_command_with, classify, hold, parse_hello, Cmd, Ctx, End, Profile, Refused,
    INVALID_USER,
};
use crate::backend::random_password;
use crate::directory::AccessPolicy;

/// What an unsupported command becomes: a name no command has, so that Redis answers with an
/// error, in order (and flags an open transaction), which the gateway then rewrites into the
/// unknown-command error for the name the client sent.
const UNSUPPORTED: &[u8] = b"entra-unsupported-command";
use tracing::debug;

/// Phase 2: the client-to-backend direction of an authenticated connection.
pub(super) struct Forwarder {
    parser: RequestParser,
    /// After a protocol error: what is buffered went to Redis, which answers it and closes.
    pub(super) poisoned: bool,
    /// A request whose replies cannot be counted was forwarded.
    untrackable: bool,
    /// Bytes to write when a request was substituted (otherwise the read buffer is written).
    pub(super) out: Vec<u8>,
    /// Whether `out`, not the read buffer, is what to write (it may be empty: a refused
    /// request's streamed rest is dropped).
    pub(super) substituted: bool,
    profile: Profile,
    /// The Enterprise cluster policy's slot rules and the `WATCH`/`MULTI` block open on the
    /// connection, when the gateway plays that policy (boxed: most sessions have none).
    slots: Option<Box<(SlotRules, Block)>>,
    /// The rest of a refused request is streaming in: drop it.
    dropping: bool,
    /// An `AUTH` waits for its identity's backend user: create it, then process again.
    pub(super) needs: Option<(String, AccessPolicy)>,
}

/// What to forward for a request and what its reply will tell, or the identity whose backend
/// user must be created first.
type Decided = Result<(Action, Expect), (String, AccessPolicy)>;

/// What to do with a request.
enum Action {
    Forward,
    Substitute(Vec<u8>),
}

impl Forwarder {
    pub(super) fn new(profile: Profile, slots: Option<SlotRules>) -> Self {
        Self {
            parser: RequestParser::new(Limits::AUTHENTICATED),
            poisoned: false,
            untrackable: false,
            out: Vec::new(),
            substituted: false,
            profile,
            slots: slots.map(|rules| Box::new((rules, Block::default()))),
            dropping: false,
            needs: None,
        }
    }

    /// Frames `buf`, records what each request's reply will tell, and returns how many bytes of
    /// `buf` are ready to go to the backend. Those are `buf[..n]` unless a request was
    /// substituted (`self.substituted`), in which case they are in `self.out`.
    pub(super) fn process(
        &mut self,
        buf: &[u8],
        ctx: &Ctx<'_>,
        tracker: &Mutex<Tracker>,
    ) -> Result<usize, End> {
        let mut tracker = tracker.lock().unwrap_or_else(|e| e.into_inner());
        let profile = self.profile;
        let mut pos = 0;
        let mut copied = 0;
        loop {
            let rest = buf.get(pos..).unwrap_or(&[]);
            let was_streaming = self.parser.is_streaming();
            let slots = self.slots.as_deref();
            let held = |name: &[u8]| {
                let cap = hold(name, profile);
                match slots.map(|(rules, block)| rules.need(name, block.is_open())) {
                    Some(Need::Whole) => Some(cap.unwrap_or(0).max(MAX_KEYED_REQUEST)),
                    _ => cap,
                }
            };
            match self.parser.next_capped(rest, held) {
                Event::Partial(n) => {
                    let piece = rest.get(..n).unwrap_or(&[]);
                    if !was_streaming {
                        // A request the gateway need not see whole: one reply, unless the
                        // slot rules refuse it from its start.
                        let refusal = match self.slots {
                            Some(_) => self.slots_refuse(&leading_args(piece)),
                            None => None,
                        };
                        if let Some(refusal) = refusal {
                            self.expect(&mut tracker, refusal)?;
                            self.substitute(buf, &mut copied, pos, &refused_command());
                            self.dropping = true;
                        } else {
                            self.expect(&mut tracker, Expect::Plain(1))?;
                        }
                    } else if self.dropping {
                        self.substitute(buf, &mut copied, pos, &[]);
                    }
                    if self.dropping {
                        copied = pos + n;
                    }
                    pos += n;
                    if !self.parser.is_streaming() {
                        self.dropping = false;
                    }
                }
                Event::Frame(frame) => {
                    let len = frame.byte_len();
                    let bytes = rest.get(..len).unwrap_or(&[]);
                    if frame.argc() > 0 {
                        let Some((action, expect)) = self.request(&frame, bytes, ctx, &tracker)?
                        else {
                            // Stop before it: it is read again once its user exists.
                            break;
                        };
                        self.expect(&mut tracker, expect)?;
                        if let Action::Substitute(with) = action {
                            self.substitute(buf, &mut copied, pos, &with);
                            copied = pos + len;
                        }
                    }
                    pos += len;
                }
                Event::Incomplete => break,
                Event::Error(ProtocolError::TooBigHeldRequest) => {
                    debug!(
                        conn = ctx.id,
                        "a request the gateway must hold is too large: closing"
                    );
                    return Err(End::Protocol);
                }
                Event::Error(e) => {
                    // Redis will see the same bytes, answer with the same error and close;
                    // nothing after them is read.
                    debug!(conn = ctx.id, error = %e, "protocol error; the backend will answer it");
                    self.poisoned = true;
                    pos = buf.len();
                    break;
                }
            }
        }
        if self.substituted {
            self.out
                .extend_from_slice(buf.get(copied..pos).unwrap_or(&[]));
        }
        Ok(pos)
    }

    /// Puts what came before `pos` (from `copied`) and then `with` in `self.out`, in the place
    /// of the request at `pos` (the caller moves `copied` past it).
    fn substitute(&mut self, buf: &[u8], copied: &mut usize, pos: usize, with: &[u8]) {
        self.out
            .extend_from_slice(buf.get(*copied..pos).unwrap_or(&[]));
        self.out.extend_from_slice(with);
        *copied = pos;
        self.substituted = true;
    }

    /// Applies the slot rules to a request (`args`: the command name first; only its start
    /// for a request streamed through) and follows the blocks it opens or closes: what its
    /// reply will be if refused.
    fn slots_refuse(&mut self, args: &[&[u8]]) -> Option<Expect> {
        let (rules, block) = self.slots.as_deref_mut()?;
        let name = args.first().copied()?;
        if rules.need(name, block.is_open()) != Need::Nothing {
            if let Err(text) = block.check(rules, args) {
                return Some(Expect::Rewrite(format!("-{text}\r\n").into_bytes().into()));
            }
        }
        block.follow(name);
        None
    }

    fn expect(&mut self, tracker: &mut Tracker, expect: Expect) -> Result<(), End> {
        if matches!(expect, Expect::Untrackable) {
            self.untrackable = true;
        }
        tracker.push(expect).map_err(|_| End::Protocol)
    }

    /// Decides what to forward for one complete request and what its reply will tell.
    fn request(
        &mut self,
        frame: &Frame,
        bytes: &[u8],
        ctx: &Ctx<'_>,
        tracker: &Tracker,
    ) -> Result<Option<(Action, Expect)>, End> {
        let name = frame.name(bytes).unwrap_or(&[]);
        let cmd = classify(name);
        let followed = !(self.untrackable || tracker.untracked());
        if !followed && matches!(cmd, Some(Cmd::Auth | Cmd::Hello | Cmd::Reset)) {
            debug!(
                conn = ctx.id,
                "AUTH, HELLO or RESET on a session whose replies are not followed: closing"
            );
            return Err(End::Untracked);
        }
        if self.slots.is_some() {
            let args = frame.args(bytes);
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_ref()).collect();
            if let Some(refusal) = self.slots_refuse(&args) {
                return Ok(Some((Action::Substitute(refused_command()), refusal)));
            }
        }
        let Some(cmd) = cmd else {
            return Ok(Some(self.unsupported(frame, bytes, name)));
        };
        let decided = match cmd {
            Cmd::Auth => self.auth(frame, bytes, ctx),
            Cmd::Hello => self.hello(frame, bytes, ctx),
            _ => return Ok(Some(self.other(cmd, frame, bytes))),
        };
        match decided {
            Ok(decided) => Ok(Some(decided)),
            Err(needs) => {
                self.needs = Some(needs);
                Ok(None)
            }
        }
    }

    /// The commands the gateway follows but does not rewrite.
    fn other(&self, cmd: Cmd, frame: &Frame, bytes: &[u8]) -> (Action, Expect) {
        match cmd {
            Cmd::Auth | Cmd::Hello => (Action::Forward, Expect::Plain(1)),
            Cmd::Reset => (Action::Forward, Expect::Reset),
            Cmd::Multi => (Action::Forward, Expect::Multi),
            Cmd::Exec => (Action::Forward, Expect::Exec),
            Cmd::Discard => (Action::Forward, Expect::Discard),
            Cmd::Monitor => (Action::Forward, Expect::Untrackable),
            Cmd::Client => {
                let args = frame.args(bytes);
                let reply_off = args.len() >= 3
                    && args[1].eq_ignore_ascii_case(b"REPLY")
                    && (args[2].eq_ignore_ascii_case(b"OFF")
                        || args[2].eq_ignore_ascii_case(b"SKIP"));
                if reply_off {
                    (Action::Forward, Expect::Untrackable)
                } else {
                    (Action::Forward, Expect::Plain(1))
                }
            }
            Cmd::Subscribe(kind) => (
                Action::Forward,
                Expect::Subscribe(kind, frame.argc().saturating_sub(1) as u64),
            ),
            Cmd::Unsubscribe(kind) => (
                Action::Forward,
                Expect::Unsubscribe(kind, frame.argc().saturating_sub(1) as u64),
            ),
        }
    }

    /// An Azure-unsupported command goes to Redis with a NUL byte after its (sub)command name,
    /// which Redis answers as an unknown (sub)command, naming it as sent
    /// ([`unsupported`](crate::unsupported)).
    fn unsupported(&self, frame: &Frame, bytes: &[u8], name: &[u8]) -> (Action, Expect) {
        if !self.profile.may_refuse(name) {
            // Most requests: no table row, so no need to read their arguments.
            return (Action::Forward, Expect::Plain(1));
        }
        let args = frame.args(bytes);
        let sub = args.get(1).map(|a| a.as_ref());
        let Some(index) = self.profile.refused_arg(name, sub) else {
            return (Action::Forward, Expect::Plain(1));
        };
        let reply = match (index, sub) {
            (1, Some(sub)) => unknown_subcommand(name, sub),
            _ => unknown_command(&args),
        };
        (
            Action::Substitute(refused_command()),
            Expect::Rewrite(reply.into()),
        )
    }

    fn auth(&self, frame: &Frame, bytes: &[u8], ctx: &Ctx<'_>) -> Decided {
        let args = frame.args(bytes);
        match args.len() {
            // Redis answers the arity error itself.
            0 | 1 => Ok((Action::Forward, Expect::Plain(1))),
            2 | 3 if ctx.reauth_refused() => {
                Ok((Action::Substitute(invalid_auth()), Expect::Plain(1)))
            }
            2 | 3 => {
                let granted = match args.len() {
                    2 => ctx.authenticate_key(&args[1]),
                    _ => ctx.authenticate(&args[1], &args[2]),
                };
                match granted {
                    Ok(granted) => Ok((
                        Action::Substitute(auth_command(&granted.user)),
                        Expect::Auth(Box::new(granted.switch(false, None))),
                    )),
                    Err(Refused::Invalid) => {
                        Ok((Action::Substitute(invalid_auth()), Expect::Plain(1)))
                    }
                    Err(Refused::NeedsUser(oid, policy)) => Err((oid, policy)),
                }
            }
            // Redis answers `-ERR syntax error`; keep the arguments from it.
            _ => {
                let mut out = Vec::new();
                encode_command(&mut out, &[&b"AUTH"[..], INVALID_USER, b"-", b"-"]);
                Ok((Action::Substitute(out), Expect::Plain(1)))
            }
        }
    }

    fn hello(&self, frame: &Frame, bytes: &[u8], ctx: &Ctx<'_>) -> Decided {
        let args = frame.args(bytes);
        match parse_hello(&args) {
            Err(e) => Ok((Action::Substitute(e.reproduction()), Expect::Plain(1))),
            Ok(hello) => match hello.auth {
                None => Ok((Action::Forward, Expect::Hello(hello.version))),
                Some(_) if ctx.reauth_refused() => Ok((
                    Action::Substitute(
                        hello.with_credentials(INVALID_USER, random_password().as_bytes()),
                    ),
                    Expect::Plain(1),
                )),
                Some((user, token)) => match ctx.authenticate(user, token) {
                    Ok(granted) => Ok((
                        Action::Substitute(hello.with_credentials(
                            granted.user.name.as_bytes(),
                            granted.user.password.as_bytes(),
                        )),
                        Expect::Auth(Box::new(granted.switch(true, hello.version))),
                    )),
                    Err(Refused::Invalid) => Ok((
                        Action::Substitute(
                            hello.with_credentials(INVALID_USER, random_password().as_bytes()),
                        ),
                        Expect::Plain(1),
                    )),
                    Err(Refused::NeedsUser(oid, policy)) => Err((oid, policy)),
                },
            },
        }
    }
}

/// What a refused request becomes on its way to Redis: [`UNSUPPORTED`], which Redis answers
/// with an error in the request's place (flagging an open transaction).
fn refused_command() -> Vec<u8> {
    let mut out = Vec::new();
    encode_command(&mut out, &[UNSUPPORTED]);
    out
}

fn invalid_auth() -> Vec<u8> {
    auth_command_with(INVALID_USER, random_password().as_bytes())
}
