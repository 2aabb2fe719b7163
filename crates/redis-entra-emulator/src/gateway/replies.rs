//! Incremental framing of the backend's replies (RESP2 and RESP3), so that the gateway knows
//! which reply answers which request without holding any of them.
//!
//! The scanner never copies a reply: it walks the bytes as they pass, keeps at most a few dozen
//! bytes of each header line, and reports each complete top-level value as a [`Reply`]: its
//! type, the start of its line, and a short summary of a few of its elements (the ones the
//! gateway reads: a subscription confirmation's kind and count, an `EXEC` element's status).
//! A 512 MiB bulk costs one header and a counter.

use std::collections::BTreeSet;

/// How many bytes of a line or bulk the scanner keeps.
const KEEP: usize = 32;
/// How many leading elements of a top-level aggregate are always summarised.
const ALWAYS: u64 = 3;

/// The first bytes of a line or bulk (at most 32), for comparisons.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Head {
    bytes: [u8; KEEP],
    len: u8,
    /// Whether the original was longer than what is kept.
    truncated: bool,
}

impl Head {
    fn push(&mut self, more: &[u8]) {
        let len = usize::from(self.len);
        let room = KEEP - len;
        let take = more.len().min(room);
        if let (Some(dst), Some(src)) = (self.bytes.get_mut(len..len + take), more.get(..take)) {
            dst.copy_from_slice(src);
        }
        self.len += take as u8;
        if more.len() > take {
            self.truncated = true;
        }
    }

    /// The kept bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Whether the whole value equals `s`, ignoring ASCII case.
    pub(crate) fn is(&self, s: &[u8]) -> bool {
        !self.truncated && self.as_bytes().eq_ignore_ascii_case(s)
    }

    /// The value as an integer, if it is one.
    pub(crate) fn int(&self) -> Option<i64> {
        if self.truncated {
            return None;
        }
        std::str::from_utf8(self.as_bytes()).ok()?.parse().ok()
    }
}

/// A summary of one value: its RESP type byte and the head of its line (simple types) or of
/// its payload (bulk types; for aggregates, the count as sent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Value {
    /// The type byte: `+ - : $ * % ~ > _ # , ( ! =`.
    pub(crate) kind: u8,
    /// See the type's description.
    pub(crate) head: Head,
}

impl Value {
    /// An error reply (`-…` or `!…`).
    pub(crate) fn is_error(&self) -> bool {
        matches!(self.kind, b'-' | b'!')
    }

    /// The status reply `+<s>`.
    pub(crate) fn is_status(&self, s: &[u8]) -> bool {
        self.kind == b'+' && self.head.is(s)
    }

    /// A RESP2 or RESP3 null (`$-1`, `*-1`, `_`).
    pub(crate) fn is_null(&self) -> bool {
        self.kind == b'_' || (matches!(self.kind, b'$' | b'*') && self.head.is(b"-1"))
    }

    /// An aggregate (array, map, set, push).
    pub(crate) fn is_aggregate(&self) -> bool {
        matches!(self.kind, b'*' | b'%' | b'~' | b'>')
    }
}

/// A complete top-level reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The value itself.
    pub(crate) value: Value,
    /// Summaries of its elements (aggregates only): the first three, and those asked for with
    /// [`Scanner::want`], each with its index.
    pub(crate) elements: Vec<(u64, Value)>,
}

impl Reply {
    /// The summary of element `index`, if it was kept.
    pub(crate) fn element(&self, index: u64) -> Option<&Value> {
        self.elements
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, v)| v)
    }

    /// Whether this is a push (`>`), RESP3's out-of-band type.
    pub(crate) fn is_push(&self) -> bool {
        self.value.kind == b'>'
    }

    /// For a pub/sub-shaped reply (an array or push whose first element is a bulk): that first
    /// element (`message`, `subscribe`, …).
    pub(crate) fn pubsub_kind(&self) -> Option<&Head> {
        if !matches!(self.value.kind, b'*' | b'>') {
            return None;
        }
        self.element(0).filter(|v| v.kind == b'$').map(|v| &v.head)
    }

    /// The third element as an integer (a subscription confirmation's count).
    pub(crate) fn third_int(&self) -> Option<i64> {
        self.element(2)
            .filter(|v| v.kind == b':')
            .and_then(|v| v.head.int())
    }
}

/// The backend sent something that is not RESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the backend's reply is not RESP")]
pub(crate) struct NotResp;

#[derive(Debug, Clone)]
enum State {
    /// Expecting a type byte.
    Type,
    /// Inside a header line of `kind`.
    Line { kind: u8, head: Head },
    /// Inside a bulk payload: bytes left, its CRLF included.
    Bulk { left: u64 },
}

/// An open aggregate: how many elements are still to come, and which is next.
#[derive(Debug, Clone, Copy)]
struct Open {
    left: u64,
    next: u64,
}

/// Frames a stream of replies. Feed it every byte the backend sends, in order.
#[derive(Debug)]
pub(crate) struct Scanner {
    state: State,
    stack: Vec<Open>,
    /// The reply being read.
    reply: Reply,
    /// The element of the top-level aggregate being read: its index and summary.
    element: Option<(u64, Value)>,
    /// Indexes of top-level elements to summarise beyond the first three.
    wanted: BTreeSet<u64>,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

impl Scanner {
    /// A scanner at a reply boundary.
    pub(crate) fn new() -> Self {
        Self {
            state: State::Type,
            stack: Vec::new(),
            reply: Reply::default(),
            element: None,
            wanted: BTreeSet::new(),
        }
    }

    /// Asks for the summaries of these top-level element indexes of the next replies (an
    /// `EXEC` reply whose queued commands the gateway follows).
    pub(crate) fn want(&mut self, indexes: impl IntoIterator<Item = u64>) {
        self.wanted = indexes.into_iter().collect();
    }

    /// Whether the scanner is between replies.
    pub(crate) fn at_boundary(&self) -> bool {
        matches!(self.state, State::Type) && self.stack.is_empty()
    }

    /// Reads from `buf` until a top-level reply completes or `buf` ends: the bytes consumed,
    /// and the reply if one completed (it ends at the consumed offset).
    pub(crate) fn next(&mut self, buf: &[u8]) -> Result<(usize, Option<Reply>), NotResp> {
        let mut pos = 0;
        while pos < buf.len() {
            match &mut self.state {
                State::Type => {
                    let kind = buf.get(pos).copied().ok_or(NotResp)?;
                    if !matches!(
                        kind,
                        b'+' | b'-'
                            | b':'
                            | b'$'
                            | b'*'
                            | b'%'
                            | b'~'
                            | b'>'
                            | b'_'
                            | b'#'
                            | b','
                            | b'('
                            | b'!'
                            | b'='
                    ) {
                        return Err(NotResp);
                    }
                    pos += 1;
                    self.state = State::Line {
                        kind,
                        head: Head::default(),
                    };
                }
                State::Line { kind, head } => {
                    let rest = buf.get(pos..).unwrap_or(&[]);
                    match rest.iter().position(|&b| b == b'\n') {
                        None => {
                            head.push(rest);
                            pos = buf.len();
                        }
                        Some(nl) => {
                            let line = rest.get(..nl).unwrap_or(&[]);
                            match line.strip_suffix(b"\r") {
                                Some(line) => head.push(line),
                                None => {
                                    head.push(line);
                                    // The CR came with the previous read.
                                    if !head.truncated && head.as_bytes().last() == Some(&b'\r') {
                                        head.len -= 1;
                                    }
                                }
                            }
                            pos += nl + 1;
                            let head = std::mem::take(head);
                            let kind = *kind;
                            if let Some(reply) = self.header(kind, head)? {
                                return Ok((pos, Some(reply)));
                            }
                        }
                    }
                }
                State::Bulk { left } => {
                    let avail = (buf.len() - pos) as u64;
                    let take = (*left).min(avail);
                    // Keep the first bytes of an element's payload.
                    if let Some((_, value)) = self.element.as_mut() {
                        let payload = take.min(left.saturating_sub(2)) as usize;
                        if !value.head.truncated && payload > 0 {
                            let n = payload.min(KEEP + 1);
                            if let Some(bytes) = buf.get(pos..pos + n) {
                                value.head.push(bytes);
                            }
                        }
                    }
                    *left -= take;
                    pos += take as usize;
                    if *left == 0 {
                        self.state = State::Type;
                        if let Some(reply) = self.done() {
                            return Ok((pos, Some(reply)));
                        }
                    }
                }
            }
        }
        Ok((pos, None))
    }

    /// A header line is complete.
    fn header(&mut self, kind: u8, head: Head) -> Result<Option<Reply>, NotResp> {
        let value = Value { kind, head };
        let depth = self.stack.len();
        if depth == 0 {
            self.reply = Reply {
                value: value.clone(),
                elements: Vec::new(),
            };
        } else if depth == 1 {
            let index = self.stack.last().map(|o| o.next).unwrap_or(0);
            // Bulk payloads fill the head in later.
            let summary = if matches!(kind, b'$' | b'!' | b'=') && !value.is_null() {
                Value {
                    kind,
                    head: Head::default(),
                }
            } else {
                value.clone()
            };
            self.element = Some((index, summary));
        }
        match kind {
            b'$' | b'!' | b'=' => {
                let len = value.head.int().ok_or(NotResp)?;
                if len < 0 {
                    self.state = State::Type;
                    Ok(self.done())
                } else {
                    self.state = State::Bulk {
                        left: len as u64 + 2,
                    };
                    Ok(None)
                }
            }
            b'*' | b'~' | b'>' | b'%' => {
                let n = value.head.int().ok_or(NotResp)?;
                self.state = State::Type;
                let n = if kind == b'%' { n.saturating_mul(2) } else { n };
                if n <= 0 {
                    Ok(self.done())
                } else {
                    self.stack.push(Open {
                        left: n as u64,
                        next: 0,
                    });
                    Ok(None)
                }
            }
            _ => {
                self.state = State::Type;
                Ok(self.done())
            }
        }
    }

    /// A value is complete: climb up the open aggregates; the reply if the top one completed.
    fn done(&mut self) -> Option<Reply> {
        loop {
            let depth = self.stack.len();
            if depth == 0 {
                self.element = None;
                return Some(std::mem::take(&mut self.reply));
            }
            if depth == 1 {
                if let Some((index, value)) = self.element.take() {
                    if index < ALWAYS || self.wanted.contains(&index) {
                        self.reply.elements.push((index, value));
                    }
                }
            }
            let open = self.stack.last_mut()?;
            open.left -= 1;
            open.next += 1;
            if open.left > 0 {
                return None;
            }
            self.stack.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8], step: usize) -> Vec<Reply> {
        let mut s = Scanner::new();
        let mut out = Vec::new();
        for chunk in bytes.chunks(step) {
            let mut pos = 0;
            while pos < chunk.len() {
                let (n, reply) = s.next(&chunk[pos..]).expect("RESP");
                pos += n;
                out.extend(reply);
            }
        }
        assert!(s.at_boundary());
        out
    }

    #[test]
    fn frames_replies_whatever_the_chunking() {
        let stream = b"+OK\r\n-ERR x\r\n:12\r\n$5\r\nhello\r\n$-1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n\
%1\r\n$6\r\nserver\r\n$5\r\nredis\r\n*2\r\n*1\r\n+OK\r\n$3\r\nabc\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n_\r\n*0\r\n";
        for step in 1..stream.len() {
            let replies = all(stream, step);
            assert_eq!(replies.len(), 11, "step {step}");
            assert!(replies[0].value.is_status(b"OK"));
            assert!(replies[1].value.is_error());
            assert_eq!(replies[3].value.kind, b'$');
            assert!(replies[4].value.is_null());
            assert!(replies[5].pubsub_kind().is_some_and(|k| k.is(b"subscribe")));
            assert_eq!(replies[5].third_int(), Some(1));
            assert_eq!(replies[6].value.kind, b'%');
            assert_eq!(
                replies[7].element(1).map(|v| v.head.as_bytes()),
                Some(&b"abc"[..])
            );
            assert!(replies[8].is_push());
            assert!(replies[8].pubsub_kind().is_some_and(|k| k.is(b"message")));
            assert!(replies[9].value.is_null());
        }
    }

    #[test]
    fn keeps_wanted_elements_only() {
        let mut s = Scanner::new();
        s.want([5]);
        let mut bytes = b"*7\r\n".to_vec();
        for _ in 0..5 {
            bytes.extend_from_slice(b"+QUEUED\r\n");
        }
        bytes.extend_from_slice(b"+OK\r\n$1\r\nx\r\n");
        let (n, reply) = s.next(&bytes).expect("RESP");
        assert_eq!(n, bytes.len());
        let reply = reply.expect("a reply");
        assert_eq!(reply.elements.len(), 4);
        assert!(reply.element(5).is_some_and(|v| v.is_status(b"OK")));
        assert!(reply.element(4).is_none());
    }

    /// A small deterministic generator (xorshift), so that failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// A random RESP2/RESP3 value, nested up to `depth`.
    fn value(rng: &mut Rng, depth: u32, out: &mut Vec<u8>) {
        let kinds: &[u8] = if depth == 0 {
            b"+-:$_#,(!="
        } else {
            b"+-:$_#,(!=*%~>"
        };
        let kind = kinds[rng.below(kinds.len() as u64) as usize];
        match kind {
            b'$' | b'!' | b'=' => {
                let len = rng.below(70) as usize;
                if len == 69 && kind == b'$' {
                    out.extend_from_slice(b"$-1\r\n");
                    return;
                }
                out.extend_from_slice(format!("{}{len}\r\n", kind as char).as_bytes());
                out.extend((0..len).map(|i| b"\r\nab"[i % 4]));
                out.extend_from_slice(b"\r\n");
            }
            b'*' | b'~' | b'>' | b'%' => {
                let n = rng.below(5);
                out.extend_from_slice(format!("{}{n}\r\n", kind as char).as_bytes());
                let n = if kind == b'%' { n * 2 } else { n };
                for _ in 0..n {
                    value(rng, depth - 1, out);
                }
            }
            b'_' => out.extend_from_slice(b"_\r\n"),
            other => {
                out.push(other);
                out.extend_from_slice(rng.below(1_000_000).to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    #[test]
    fn random_replies_in_random_pieces_are_all_framed() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..300 {
            let count = 1 + rng.below(20) as usize;
            let mut stream = Vec::new();
            let mut ends = Vec::new();
            for _ in 0..count {
                value(&mut rng, 3, &mut stream);
                ends.push(stream.len());
            }
            let mut s = Scanner::new();
            let mut pos = 0;
            let mut seen = Vec::new();
            while pos < stream.len() {
                let piece = 1 + rng.below(64) as usize;
                let end = (pos + piece).min(stream.len());
                let mut at = pos;
                while at < end {
                    let (n, reply) = s.next(&stream[at..end]).expect("RESP");
                    at += n;
                    if reply.is_some() {
                        seen.push(at);
                    }
                }
                pos = end;
            }
            assert_eq!(seen, ends, "round {round}");
            assert!(s.at_boundary());
        }
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(Scanner::new().next(b"hello"), Err(NotResp));
        assert_eq!(Scanner::new().next(b"$x\r\n"), Err(NotResp));
    }

    #[test]
    fn long_lines_are_truncated_not_kept() {
        let mut line = b"-ERR ".to_vec();
        line.extend(std::iter::repeat_n(b'x', 100_000));
        line.extend_from_slice(b"\r\n");
        let replies = all(&line, 4096);
        assert_eq!(replies.len(), 1);
        assert!(replies[0].value.is_error());
        assert_eq!(replies[0].value.head.as_bytes().len(), KEEP);
    }
}
