//! The gateway's RESP request parser over arbitrary client bytes.
//!
//! The first byte picks the limits (authenticated or not) and which command names the caller
//! wants whole (the others may be streamed in `Partial` pieces); the rest is the connection's
//! buffer, consumed the way the gateway's session loop consumes it. Invariants: no panic, every
//! `Frame`/`Partial` consumes at least one byte and never more than the buffer holds, a frame's
//! name and arguments come from inside the buffer, and `split_args`, `string2ll` and
//! `encode_command` agree with the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_entra_emulator::gateway::resp::{
    encode_command, split_args, string2ll, Event, Limits, RequestParser,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let limits = if mode & 1 == 0 {
        Limits::UNAUTHENTICATED
    } else {
        Limits::AUTHENTICATED
    };
    let stream_all = mode & 2 != 0;
    let mut parser = RequestParser::new(limits);
    let mut buf = input;
    // Each step consumes at least one byte, so this ends; the bound is a guard.
    for _ in 0..=input.len() {
        let event = if stream_all {
            parser.next(buf, |name| name.eq_ignore_ascii_case(b"auth"))
        } else {
            parser.next_frame(buf)
        };
        match event {
            Event::Frame(frame) => {
                let n = frame.byte_len();
                assert!(n > 0, "empty frame");
                assert!(
                    n <= buf.len(),
                    "frame of {n} bytes in a buffer of {}",
                    buf.len()
                );
                if let Some(name) = frame.name(buf) {
                    assert!(frame.argc() > 0);
                    if !frame.is_inline() {
                        assert!(name.len() <= n);
                    }
                }
                let args = frame.args(buf);
                assert!(args.len() <= frame.argc());
                if frame.is_inline() {
                    assert_eq!(args.len(), frame.argc());
                }
                if mode & 4 != 0 {
                    // Switching limits between requests, as AUTH does.
                    parser.set_limits(Limits::AUTHENTICATED);
                }
                buf = &buf[n..];
            }
            Event::Partial(n) => {
                assert!(stream_all, "Partial when every request is wanted whole");
                assert!(
                    n > 0 && n <= buf.len(),
                    "partial of {n} bytes in {}",
                    buf.len()
                );
                buf = &buf[n..];
            }
            Event::Incomplete => break,
            Event::Error(e) => {
                let reply = e.reply();
                assert!(reply.starts_with(b"-ERR ") && reply.ends_with(b"\r\n"));
                assert!(!reply[..reply.len() - 2].contains(&b'\r'));
                assert!(!reply[..reply.len() - 2].contains(&b'\n'));
                break;
            }
        }
        if buf.is_empty() {
            break;
        }
    }

    // string2ll is strict: whatever it accepts prints back to the same bytes.
    if let Some(v) = string2ll(input) {
        assert_eq!(v.to_string().as_bytes(), input);
    }
    if input.len() >= 8 {
        let v = i64::from_le_bytes(input[..8].try_into().unwrap());
        assert_eq!(string2ll(v.to_string().as_bytes()), Some(v));
    }

    // An inline line split by split_args, re-encoded as a multibulk, parses back to the same
    // arguments in one frame of exactly that length.
    if let Some(args) = split_args(input) {
        if !args.is_empty() {
            let mut encoded = Vec::new();
            encode_command(&mut encoded, &args);
            let mut p = RequestParser::new(Limits::AUTHENTICATED);
            match p.next_frame(&encoded) {
                Event::Frame(frame) => {
                    assert_eq!(frame.byte_len(), encoded.len());
                    assert_eq!(frame.argc(), args.len());
                    assert_eq!(frame.name(&encoded), Some(args[0].as_slice()));
                    let back: Vec<Vec<u8>> = frame
                        .args(&encoded)
                        .into_iter()
                        .map(|a| a.into_owned())
                        .collect();
                    assert_eq!(back, args);
                }
                other => panic!("encoded command did not parse back: {other:?}"),
            }
        }
    }
});
