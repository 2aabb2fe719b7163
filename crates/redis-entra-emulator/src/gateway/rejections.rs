//! Redis' own answers to a request it rejects before looking at who sent it: an unknown command
//! or subcommand, or a wrong number of arguments. Redis 7.0 checks these before authentication,
//! so an unauthenticated client gets them rather than `NOAUTH` (Valkey 8 and later answer
//! `NOAUTH` first: the backend's own answer to a probe decides); the gateway answers phase 1's
//! requests itself and words them the same way, from the backend's own `COMMAND` table.

use std::borrow::Cow;

use crate::backend::CommandArities;

/// A C string's view of `bytes` (Redis formats names with `%s`: a NUL ends them), at most
/// `max` bytes.
fn c_str(bytes: &[u8], max: usize) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes.get(..end.min(max)).unwrap_or(&[])
}

/// An error reply as Redis writes it: `-ERR <text>\r\n`, CR and LF in the text made spaces.
fn error(text: &[u8]) -> Vec<u8> {
    let mut out = b"-ERR ".to_vec();
    out.extend(
        text.iter()
            .map(|&b| if matches!(b, b'\r' | b'\n') { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
    out
}

/// The error Redis gives `args` (command name first) before checking authentication, if any.
pub(super) fn rejection(table: &CommandArities, args: &[Cow<'_, [u8]>]) -> Option<Vec<u8>> {
    if !table.checks_commands_before_auth() {
        return None;
    }
    let name = args.first()?;
    let argc = args.len() as i64;
    let arity_ok = |arity: i64| !((arity > 0 && arity != argc) || argc < -arity);
    let Some((arity, subcommands)) = table.get(name) else {
        return Some(unknown_command(args));
    };
    if subcommands.is_empty() || argc == 1 {
        if arity_ok(arity) {
            return None;
        }
        let full = String::from_utf8_lossy(name).to_ascii_lowercase();
        return Some(error(
            format!("wrong number of arguments for '{full}' command").as_bytes(),
        ));
    }
    let sub = args.get(1)?;
    let sub_name = String::from_utf8_lossy(sub).to_ascii_lowercase();
    match subcommands.get(&sub_name) {
        Some(&sub_arity) if arity_ok(sub_arity) => None,
        Some(_) => {
            let full = format!(
                "{}|{sub_name}",
                String::from_utf8_lossy(name).to_ascii_lowercase()
            );
            Some(error(
                format!("wrong number of arguments for '{full}' command").as_bytes(),
            ))
        }
        None => Some(unknown_subcommand(name, sub)),
    }
}

/// Redis' reply to an unknown command: `-ERR unknown command 'NAME', with args beginning
/// with: 'a' 'b' ` (the name and the argument list each cut at 128 bytes, as Redis does).
pub(super) fn unknown_command(args: &[Cow<'_, [u8]>]) -> Vec<u8> {
    let name = args.first().map(|a| a.as_ref()).unwrap_or(&[]);
    let mut text = b"unknown command '".to_vec();
    text.extend_from_slice(c_str(name, 128));
    text.extend_from_slice(b"', with args beginning with: ");
    let mut list: Vec<u8> = Vec::new();
    for arg in args.iter().skip(1) {
        if list.len() >= 128 {
            break;
        }
        // `"'%.*s' "` with the room left before 128 bytes as the precision.
        let room = 128 - list.len();
        list.push(b'\'');
        list.extend_from_slice(c_str(arg, room));
        list.extend_from_slice(b"' ");
    }
    text.extend_from_slice(&list);
    error(&text)
}

/// Redis' reply to an unknown subcommand of a container command: `-ERR unknown subcommand
/// 'sub'. Try NAME HELP.`
pub(super) fn unknown_subcommand(name: &[u8], sub: &[u8]) -> Vec<u8> {
    let mut text = b"unknown subcommand '".to_vec();
    text.extend_from_slice(c_str(sub, 128));
    text.extend_from_slice(b"'. Try ");
    text.extend(c_str(name, usize::MAX).iter().map(u8::to_ascii_uppercase));
    text.extend_from_slice(b" HELP.");
    error(&text)
}
