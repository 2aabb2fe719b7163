//! `HELLO`, checked as Redis' `helloCommand` checks it before looking at its credentials, so
//! that the gateway answers (or has Redis answer) every malformed `HELLO` as Redis would.

use std::borrow::Cow;

use super::resp::encode_command;

/// A `HELLO` request, checked as Redis' `helloCommand` checks it before authenticating.
pub(super) struct Hello<'a> {
    /// The version argument as sent (validated: 2 or 3).
    pub(super) version_arg: Option<&'a [u8]>,
    pub(super) version: Option<u8>,
    pub(super) auth: Option<(&'a [u8], &'a [u8])>,
    pub(super) setname: Option<&'a [u8]>,
}

/// Why Redis would refuse a `HELLO` before looking at its credentials.
pub(super) enum HelloError<'a> {
    NotInteger(&'a [u8]),
    NoProto(&'a [u8]),
    Syntax(&'a [u8], &'a [u8]),
    BadName(&'a [u8], &'a [u8]),
}

impl HelloError<'_> {
    /// Redis' reply.
    pub(super) fn reply(&self) -> Vec<u8> {
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
    pub(super) fn reproduction(&self) -> Vec<u8> {
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

pub(super) fn parse_hello<'a>(args: &'a [Cow<'a, [u8]>]) -> Result<Hello<'a>, HelloError<'a>> {
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
    pub(super) fn with_credentials(&self, user: &[u8], password: &[u8]) -> Vec<u8> {
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
