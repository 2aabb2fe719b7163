//! Incremental RESP request framing, byte for byte as `redis-server` 7 frames requests.
//!
//! The gateway must see exactly the command boundaries Redis will see, or a client could slip an
//! `AUTH` past it. So this module mirrors `processMultibulkBuffer` and `processInlineBuffer` of
//! Redis' `networking.c`: the same number syntax (`string2ll`), the same 64 KiB limit on a
//! header or inline line without its terminator, the two CRLF bytes after a bulk skipped
//! unchecked, `*0`/`*-1` and blank lines as "no command", quoting as `sdssplitargs` does it, and
//! the same error texts.
//!
//! The parser never copies request bytes. A complete frame comes back as a length plus where its
//! command name sits; its arguments are read only when asked for ([`Frame::args`]). A frame whose
//! command the caller does not need whole (decided from its name) can be *streamed*: the parser
//! hands back the bytes it has of it ([`Event::Partial`]) and keeps its place, so a 512 MiB `SET`
//! is never buffered.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// Redis' `PROTO_INLINE_MAX_SIZE`: the longest inline request, or multibulk/bulk header line,
/// Redis waits for before calling it a protocol error.
pub const INLINE_MAX: usize = 64 * 1024;

/// Redis' `LONG_STR_SIZE`: `string2ll` refuses strings this long or longer.
const LONG_STR_SIZE: usize = 21;

/// Longest command name the parser waits for before deciding whether a frame can be streamed.
const MAX_NAME_WAIT: usize = 64;

/// Size limits of requests, which depend on whether the connection is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest multibulk count accepted.
    pub max_multibulk: i64,
    /// The largest bulk length accepted.
    pub max_bulk: i64,
    /// Whether the tighter limits for unauthenticated clients apply (a count above 10 or a bulk
    /// longer than 16384 is then a protocol error, as in Redis ≥ 6.2).
    pub unauthenticated: bool,
}

impl Limits {
    /// Redis' limits for a client that has not authenticated yet.
    pub const UNAUTHENTICATED: Limits = Limits {
        max_multibulk: i32::MAX as i64,
        max_bulk: 512 * 1024 * 1024,
        unauthenticated: true,
    };
    /// Redis 7's limits for an authenticated client: a count up to `INT_MAX` and bulks up to
    /// `proto-max-bulk-len` (512 MiB by default).
    pub const AUTHENTICATED: Limits = Limits {
        max_multibulk: i32::MAX as i64,
        max_bulk: 512 * 1024 * 1024,
        unauthenticated: false,
    };

    const UNAUTH_MAX_MULTIBULK: i64 = 10;
    const UNAUTH_MAX_BULK: i64 = 16384;
}

/// A request that breaks the protocol. Redis answers it with [`ProtocolError::reply`] and closes
/// the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// `*` followed by something other than a count in range.
    InvalidMultibulkLength,
    /// A count above 10 before authentication.
    UnauthenticatedMultibulkLength,
    /// `$` followed by something other than a length in range.
    InvalidBulkLength,
    /// A bulk longer than 16384 bytes before authentication.
    UnauthenticatedBulkLength,
    /// A bulk header that does not start with `$`; carries the byte found.
    ExpectedDollar(u8),
    /// A multibulk header line longer than 64 KiB.
    TooBigMultibulkCountString,
    /// A bulk header line longer than 64 KiB.
    TooBigBulkCountString,
    /// An inline request longer than 64 KiB.
    TooBigInlineRequest,
    /// An inline request with an unterminated quote.
    UnbalancedQuotes,
    /// A request the gateway must hold whole (`AUTH`, `HELLO`, the subscribe commands, …) is
    /// longer than the gateway's cap for it. Redis has no such error: the gateway closes the
    /// connection.
    TooBigHeldRequest,
}

impl ProtocolError {
    /// The RESP error reply Redis sends for it, `\r\n` included.
    pub fn reply(&self) -> Vec<u8> {
        let mut out = b"-ERR Protocol error: ".to_vec();
        match self {
            Self::InvalidMultibulkLength => out.extend_from_slice(b"invalid multibulk length"),
            Self::UnauthenticatedMultibulkLength => {
                out.extend_from_slice(b"unauthenticated multibulk length")
            }
            Self::InvalidBulkLength => out.extend_from_slice(b"invalid bulk length"),
            Self::UnauthenticatedBulkLength => {
                out.extend_from_slice(b"unauthenticated bulk length")
            }
            Self::ExpectedDollar(got) => {
                // Redis turns CR and LF in error texts into spaces.
                let got = if matches!(got, b'\r' | b'\n') {
                    b' '
                } else {
                    *got
                };
                out.extend_from_slice(b"expected '$', got '");
                out.push(got);
                out.push(b'\'');
            }
            Self::TooBigMultibulkCountString => {
                out.extend_from_slice(b"too big mbulk count string")
            }
            Self::TooBigBulkCountString => out.extend_from_slice(b"too big bulk count string"),
            Self::TooBigInlineRequest => out.extend_from_slice(b"too big inline request"),
            Self::UnbalancedQuotes => out.extend_from_slice(b"unbalanced quotes in request"),
            Self::TooBigHeldRequest => out.extend_from_slice(b"too big request for the gateway"),
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reply = self.reply();
        let text = reply.get(1..reply.len().saturating_sub(2)).unwrap_or(&[]);
        f.write_str(&String::from_utf8_lossy(text))
    }
}

impl std::error::Error for ProtocolError {}

/// A complete request at the start of the parsed buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    len: usize,
    kind: FrameKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FrameKind {
    /// `*N\r\n$len\r\n…`: where the first bulk (the command name) sits, if there is one.
    Multibulk {
        argc: usize,
        name: Option<Range<usize>>,
    },
    /// An inline request, already split as `sdssplitargs` splits it.
    Inline { args: Vec<Vec<u8>> },
}

impl Frame {
    /// How many bytes of the buffer the frame occupies (from its start).
    pub fn byte_len(&self) -> usize {
        self.len
    }

    /// How many arguments (the command name included) the request has; 0 for `*0`, `*-1` and
    /// blank inline lines, which Redis skips.
    pub fn argc(&self) -> usize {
        match &self.kind {
            FrameKind::Multibulk { argc, .. } => *argc,
            FrameKind::Inline { args } => args.len(),
        }
    }

    /// Whether this is an inline request.
    pub fn is_inline(&self) -> bool {
        matches!(self.kind, FrameKind::Inline { .. })
    }

    /// The command name, as sent (any case). `buf` must be the buffer the frame was parsed from.
    pub fn name<'a>(&'a self, buf: &'a [u8]) -> Option<&'a [u8]> {
        match &self.kind {
            FrameKind::Multibulk { name, .. } => name.clone().and_then(|r| buf.get(r)),
            FrameKind::Inline { args } => args.first().map(Vec::as_slice),
        }
    }

    /// Every argument, the command name first. `buf` must be the buffer the frame was parsed
    /// from. Reads the bulk headers again: call it only for the few commands that need it.
    pub fn args<'a>(&'a self, buf: &'a [u8]) -> Vec<Cow<'a, [u8]>> {
        match &self.kind {
            FrameKind::Inline { args } => {
                args.iter().map(|a| Cow::Borrowed(a.as_slice())).collect()
            }
            FrameKind::Multibulk { argc, .. } => leading_args(buf.get(..self.len).unwrap_or(&[]))
                .into_iter()
                .take(*argc)
                .map(Cow::Borrowed)
                .collect(),
        }
    }
}

/// What [`RequestParser::next`] found at the start of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete request occupying the buffer's first [`Frame::byte_len`] bytes.
    Frame(Frame),
    /// The first `n` bytes (n > 0) are part of a request the caller said it does not need whole:
    /// pass them on. The parser remembers where in that request it is.
    Partial(usize),
    /// More bytes are needed; nothing was consumed.
    Incomplete,
    /// The bytes at the start of the buffer break the protocol.
    Error(ProtocolError),
}

/// Where the parser is inside a request it streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Streaming {
    /// Bulks whose header has not been read yet.
    bulks_left: u64,
    /// Bytes of the current bulk (its CRLF included) still to come.
    bytes_left: u64,
}

/// Where the parser stopped inside a request it holds whole, so that the next call goes on
/// from there instead of reading the request again from its start.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resume {
    /// Where the next bulk header starts.
    pos: usize,
    /// The index of that bulk.
    index: usize,
    argc: usize,
    name: Option<Range<usize>>,
    cap: usize,
}

/// An incremental request parser for one connection.
///
/// Feed it the connection's unconsumed bytes; after each [`Event::Frame`] or [`Event::Partial`]
/// the caller drops the consumed bytes from the front of its buffer before calling again. After
/// [`Event::Incomplete`] the caller only appends to the buffer: the parser goes on where it
/// stopped, so a request arriving in many reads is read once (linear time).
#[derive(Debug, Clone)]
pub struct RequestParser {
    limits: Limits,
    streaming: Option<Streaming>,
    resume: Option<Resume>,
}

impl RequestParser {
    /// A parser at a request boundary.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            streaming: None,
            resume: None,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Changes the limits (from the next request on), as authentication does.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Whether the parser is in the middle of a streamed request.
    pub fn is_streaming(&self) -> bool {
        self.streaming.is_some()
    }

    /// Reads the next request (or part of one) from `buf`. `whole(name)` tells whether the
    /// caller needs the complete request for a command name; requests it does not need whole may
    /// come back in [`Event::Partial`] pieces.
    pub fn next(&mut self, buf: &[u8], whole: impl Fn(&[u8]) -> bool) -> Event {
        self.next_inner(buf, |name| whole(name).then_some(usize::MAX), true)
    }

    /// As [`next`](Self::next), with a cap on the requests held whole: `hold(name)` is `None`
    /// for a request that may be streamed, or the most bytes the caller holds of one. A held
    /// request longer than its cap is [`ProtocolError::TooBigHeldRequest`].
    pub fn next_capped(&mut self, buf: &[u8], hold: impl Fn(&[u8]) -> Option<usize>) -> Event {
        self.next_inner(buf, hold, true)
    }

    /// Reads the next complete request from `buf`, never streaming.
    pub fn next_frame(&mut self, buf: &[u8]) -> Event {
        // Not `next(buf, |_| true)`: a name too long to wait for would still be streamed.
        self.next_inner(buf, |_| Some(usize::MAX), false)
    }

    fn next_inner(
        &mut self,
        buf: &[u8],
        hold: impl Fn(&[u8]) -> Option<usize>,
        stream_long_names: bool,
    ) -> Event {
        if let Some(state) = self.streaming {
            return self.continue_streaming(buf, state);
        }
        match buf.first() {
            None => Event::Incomplete,
            Some(b'*') => self.multibulk(buf, hold, stream_long_names),
            Some(_) => inline(buf),
        }
    }

    fn multibulk(
        &mut self,
        buf: &[u8],
        hold: impl Fn(&[u8]) -> Option<usize>,
        stream_long_names: bool,
    ) -> Event {
        if let Some(resume) = self.resume.take() {
            return self.bulks(buf, resume);
        }
        let Some(cr) = find_cr(buf, 0) else {
            return if buf.len() > INLINE_MAX {
                Event::Error(ProtocolError::TooBigMultibulkCountString)
            } else {
                Event::Incomplete
            };
        };
        if cr + 2 > buf.len() {
            return Event::Incomplete;
        }
        let count = match buf.get(1..cr).and_then(string2ll) {
            Some(n) if n <= self.limits.max_multibulk => n,
            _ => return Event::Error(ProtocolError::InvalidMultibulkLength),
        };
        if self.limits.unauthenticated && count > Limits::UNAUTH_MAX_MULTIBULK {
            return Event::Error(ProtocolError::UnauthenticatedMultibulkLength);
        }
        let mut pos = cr + 2;
        if count <= 0 {
            return Event::Frame(Frame {
                len: pos,
                kind: FrameKind::Multibulk {
                    argc: 0,
                    name: None,
                },
            });
        }
        let argc = usize::try_from(count).unwrap_or(usize::MAX);
        // The command name: wait for it unless it is too long to be one the caller holds.
        let header = match self.bulk_header(buf, pos) {
            Ok(Some(h)) => h,
            Ok(None) => return Event::Incomplete,
            Err(e) => return Event::Error(e),
        };
        let (data, len) = header;
        let end = data
            .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
            .saturating_add(2);
        let mut name = None;
        let cap = if len > MAX_NAME_WAIT as u64 && end > buf.len() {
            // A huge "name": no command the caller intercepts; stream it (unless the caller
            // wants every request whole).
            if stream_long_names {
                None
            } else {
                Some(usize::MAX)
            }
        } else if end <= buf.len() {
            let range = data..data + len as usize;
            let cap = buf.get(range.clone()).and_then(&hold);
            name = Some(range);
            cap
        } else {
            // The name is on its way: wait for it.
            return Event::Incomplete;
        };
        let Some(cap) = cap else {
            // Not held: read what is complete, stream from the first bulk that is not.
            for index in 0..argc {
                let (data, len) = match self.bulk_header(buf, pos) {
                    Ok(Some(h)) => h,
                    Ok(None) => return self.stop(pos, true, argc - index, 0),
                    Err(e) => return Event::Error(e),
                };
                let end = data
                    .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
                    .saturating_add(2);
                if end > buf.len() {
                    let have = (buf.len() - data) as u64;
                    return self.stop(buf.len(), true, argc - index - 1, len + 2 - have);
                }
                pos = end;
            }
            return Event::Frame(Frame {
                len: pos,
                kind: FrameKind::Multibulk { argc, name },
            });
        };
        let resume = Resume {
            pos,
            index: 0,
            argc,
            name,
            cap,
        };
        self.bulks(buf, resume)
    }

    /// Reads the bulks of a request held whole, from `resume` on.
    fn bulks(&mut self, buf: &[u8], mut at: Resume) -> Event {
        while at.index < at.argc {
            let (data, len) = match self.bulk_header(buf, at.pos) {
                Ok(Some(h)) => h,
                Ok(None) => {
                    if at.pos > at.cap {
                        return Event::Error(ProtocolError::TooBigHeldRequest);
                    }
                    self.resume = Some(at);
                    return Event::Incomplete;
                }
                Err(e) => return Event::Error(e),
            };
            let end = data
                .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
                .saturating_add(2);
            if end > at.cap {
                return Event::Error(ProtocolError::TooBigHeldRequest);
            }
            if end > buf.len() {
                self.resume = Some(at);
                return Event::Incomplete;
            }
            at.pos = end;
            at.index += 1;
        }
        Event::Frame(Frame {
            len: at.pos,
            kind: FrameKind::Multibulk {
                argc: at.argc,
                name: at.name,
            },
        })
    }

    /// The frame cannot be completed from `buf`: stream what there is, or wait.
    fn stop(&mut self, pos: usize, may_stream: bool, bulks_left: usize, bytes_left: u64) -> Event {
        if !may_stream || pos == 0 {
            return Event::Incomplete;
        }
        self.streaming = Some(Streaming {
            bulks_left: bulks_left as u64,
            bytes_left,
        });
        Event::Partial(pos)
    }

    fn continue_streaming(&mut self, buf: &[u8], mut state: Streaming) -> Event {
        let mut pos = 0usize;
        loop {
            if state.bytes_left > 0 {
                let avail = (buf.len() - pos) as u64;
                let take = state.bytes_left.min(avail);
                pos += take as usize;
                state.bytes_left -= take;
                if state.bytes_left > 0 {
                    break;
                }
            }
            if state.bulks_left == 0 {
                self.streaming = None;
                return if pos == 0 {
                    // Cannot happen (a finished frame leaves streaming at once), but be safe.
                    self.next(buf, |_| true)
                } else {
                    Event::Partial(pos)
                };
            }
            match self.bulk_header(buf, pos) {
                Ok(Some((data, len))) => {
                    pos = data;
                    state.bulks_left -= 1;
                    state.bytes_left = len + 2;
                }
                Ok(None) => break,
                Err(e) => {
                    self.streaming = Some(state);
                    return if pos > 0 {
                        Event::Partial(pos)
                    } else {
                        Event::Error(e)
                    };
                }
            }
        }
        self.streaming = Some(state);
        if pos == 0 {
            Event::Incomplete
        } else {
            Event::Partial(pos)
        }
    }

    /// Reads a `$len\r\n` header at `pos`: `Ok(Some((data start, len)))`, `Ok(None)` when
    /// incomplete.
    fn bulk_header(&self, buf: &[u8], pos: usize) -> Result<Option<(usize, u64)>, ProtocolError> {
        let Some(cr) = find_cr(buf, pos) else {
            return if buf.len() - pos.min(buf.len()) > INLINE_MAX {
                Err(ProtocolError::TooBigBulkCountString)
            } else {
                Ok(None)
            };
        };
        if cr + 2 > buf.len() {
            return Ok(None);
        }
        match buf.get(pos) {
            Some(b'$') => {}
            Some(other) => return Err(ProtocolError::ExpectedDollar(*other)),
            None => return Ok(None),
        }
        let len = match buf.get(pos + 1..cr).and_then(string2ll) {
            Some(n) if n >= 0 && n <= self.limits.max_bulk => n,
            _ => return Err(ProtocolError::InvalidBulkLength),
        };
        if self.limits.unauthenticated && len > Limits::UNAUTH_MAX_BULK {
            return Err(ProtocolError::UnauthenticatedBulkLength);
        }
        Ok(Some((cr + 2, len as u64)))
    }
}

/// An inline request (any first byte but `*`), up to `\n`.
fn inline(buf: &[u8]) -> Event {
    let Some(nl) = find_stop(buf, 0, b'\n') else {
        return if buf.len() > INLINE_MAX {
            Event::Error(ProtocolError::TooBigInlineRequest)
        } else {
            Event::Incomplete
        };
    };
    let line_end = if nl > 0 && buf.get(nl - 1) == Some(&b'\r') {
        nl - 1
    } else {
        nl
    };
    match split_args(buf.get(..line_end).unwrap_or(&[])) {
        Some(args) => Event::Frame(Frame {
            len: nl + 1,
            kind: FrameKind::Inline { args },
        }),
        None => Event::Error(ProtocolError::UnbalancedQuotes),
    }
}

/// Where `strchr(buf + from, '\r')` finds a CR: like C, a NUL byte ends the search.
fn find_cr(buf: &[u8], from: usize) -> Option<usize> {
    find_stop(buf, from, b'\r')
}

/// The first `needle` at or after `from`, unless a NUL comes first (C string semantics).
fn find_stop(buf: &[u8], from: usize, needle: u8) -> Option<usize> {
    let rest = buf.get(from..)?;
    let i = rest.iter().position(|&b| b == needle || b == 0)?;
    (rest[i] == needle).then_some(from + i)
}

/// The complete arguments at the start of a multibulk request, the command name first: all
/// of them for a whole request, those that have arrived for the start of one.
pub fn leading_args(buf: &[u8]) -> Vec<&[u8]> {
    let mut args = Vec::new();
    if buf.first() != Some(&b'*') {
        return args;
    }
    let Some(mut pos) = find_cr(buf, 0).map(|cr| cr + 2) else {
        return args;
    };
    while buf.get(pos) == Some(&b'$') {
        let Some(cr) = find_cr(buf, pos) else { break };
        let Some(len) = buf
            .get(pos + 1..cr)
            .and_then(string2ll)
            .and_then(|l| usize::try_from(l).ok())
        else {
            break;
        };
        let start = cr + 2;
        let Some(arg) = buf.get(start..start.saturating_add(len)) else {
            break;
        };
        args.push(arg);
        pos = start + len + 2;
    }
    args
}

/// Redis' `string2ll`: a strict decimal `i64` (no sign but `-`, no leading zeros, no spaces,
/// fewer than 21 characters).
pub fn string2ll(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() >= LONG_STR_SIZE {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        if v > i64::MAX as u64 + 1 {
            None
        } else {
            Some((v as i128).wrapping_neg() as i64)
        }
    } else {
        i64::try_from(v).ok()
    }
}

/// Redis' `sdssplitargs`: splits an inline request on blanks, honouring `"…"` (with `\xHH`,
/// `\n`, `\r`, `\t`, `\b`, `\a` and `\<char>` escapes) and `'…'` (with `\'`). `None` for
/// unbalanced quotes, or a closing quote followed by something other than a blank.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    // C's isspace in the C locale.
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let mut args = Vec::new();
    let mut p = 0usize;
    loop {
        while at(p) != 0 && is_space(at(p)) {
            p += 1;
        }
        if at(p) == 0 {
            return Some(args);
        }
        let mut current = Vec::new();
        let (mut in_dq, mut in_sq, mut done) = (false, false, false);
        while !done {
            let c = at(p);
            if in_dq {
                if c == b'\\'
                    && at(p + 1) == b'x'
                    && at(p + 2).is_ascii_hexdigit()
                    && at(p + 3).is_ascii_hexdigit()
                {
                    current.push(hex(at(p + 2)) * 16 + hex(at(p + 3)));
                    p += 3;
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    current.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    done = true;
                } else if c == 0 {
                    return None;
                } else {
                    current.push(c);
                }
            } else if in_sq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    current.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    done = true;
                } else if c == 0 {
                    return None;
                } else {
                    current.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    other => current.push(other),
                }
            }
            if at(p) != 0 {
                p += 1;
            }
        }
        args.push(current);
    }
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

/// Appends a request in multibulk form to `out`.
pub fn encode_command<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        let arg = arg.as_ref();
        out.push(b'$');
        out.extend_from_slice(arg.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11: a request held whole is read once however many reads it takes (the parser
    /// resumes where it stopped), and one longer than its cap is an error as soon as a bulk
    /// header shows it, without waiting for the bytes.
    #[test]
    fn held_requests_resume_and_are_capped() {
        let mut request = b"*3\r\n$4\r\nAUTH\r\n$3\r\noid\r\n$1000\r\n".to_vec();
        request.extend_from_slice(&[b'x'; 1000]);
        request.extend_from_slice(b"\r\n");
        let mut parser = RequestParser::new(Limits::AUTHENTICATED);
        for cut in (1..request.len()).step_by(7) {
            assert_eq!(
                parser.next_capped(&request[..cut], |_| Some(4096)),
                Event::Incomplete,
                "cut {cut}"
            );
        }
        match parser.next_capped(&request, |_| Some(4096)) {
            Event::Frame(frame) => assert_eq!(frame.byte_len(), request.len()),
            other => panic!("{other:?}"),
        }
        let mut parser = RequestParser::new(Limits::AUTHENTICATED);
        assert_eq!(
            parser.next_capped(&request[..40], |_| Some(512)),
            Event::Error(ProtocolError::TooBigHeldRequest)
        );
        // `*2000000000` and endless one-byte bulks: cut at the cap.
        let mut endless = b"*2000000000\r\n$9\r\nSUBSCRIBE\r\n".to_vec();
        let mut parser = RequestParser::new(Limits::AUTHENTICATED);
        let mut verdict = Event::Incomplete;
        while endless.len() < 10_000 {
            endless.extend_from_slice(b"$1\r\na\r\n");
            verdict = parser.next_capped(&endless, |_| Some(1024));
            if verdict != Event::Incomplete {
                break;
            }
        }
        assert_eq!(verdict, Event::Error(ProtocolError::TooBigHeldRequest));
        // Not held: streamed as before.
        let mut parser = RequestParser::new(Limits::AUTHENTICATED);
        assert!(matches!(
            parser.next_capped(&request[..40], |_| None),
            Event::Partial(_)
        ));
    }

    /// Found by `cargo fuzz run resp_parser` (docs/RELIABILITY.md): `next_frame` streamed a
    /// request whose first bulk (the name) was longer than `MAX_NAME_WAIT` and not all there yet,
    /// answering `Partial` although it promises whole frames. Phase 1 of a session treats
    /// `Partial` as "wait for more" without consuming, so the parser was left mid-stream and the
    /// request was never framed.
    #[test]
    fn fuzz_regression_next_frame_never_streams_a_long_name() {
        let mut request = b"*1\r\n$100\r\n".to_vec();
        request.extend_from_slice(&[b'x'; 100]);
        request.extend_from_slice(b"\r\n");
        for cut in 0..request.len() {
            let mut parser = RequestParser::new(Limits::UNAUTHENTICATED);
            assert_eq!(
                parser.next_frame(&request[..cut]),
                Event::Incomplete,
                "cut {cut}"
            );
            assert!(!parser.is_streaming(), "cut {cut}");
            match parser.next_frame(&request) {
                Event::Frame(frame) => {
                    assert_eq!((frame.byte_len(), frame.argc()), (request.len(), 1));
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        // `next` still streams such a request, as before.
        let mut parser = RequestParser::new(Limits::UNAUTHENTICATED);
        assert_eq!(parser.next(&request[..50], |_| true), Event::Partial(50));
        assert!(parser.is_streaming());

        // The fuzzer's input (its first byte selected `next_frame` and unauthenticated limits).
        let input = b"\n\n*1\r\xdb$222\r\xdb$3\r\xdb\n\xff\xfe\xff\x03\"\x05\x00\"";
        let mut parser = RequestParser::new(Limits::UNAUTHENTICATED);
        let mut buf = &input[..];
        loop {
            match parser.next_frame(buf) {
                Event::Frame(frame) => buf = &buf[frame.byte_len()..],
                Event::Incomplete | Event::Error(_) => break,
                Event::Partial(n) => panic!("next_frame streamed {n} bytes"),
            }
        }
    }
}
