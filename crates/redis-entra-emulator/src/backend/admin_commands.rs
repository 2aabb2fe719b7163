//! Administrative commands on a backend connection: sending one and reading its RESP2 reply.

use std::io;
use std::pin::Pin;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::connect::BackendStream;
use crate::Error;

/// A reply to an administrative command: an error's text, or anything else as text.
pub(super) enum Reply {
    Error(String),
    Other(String),
}

/// A RESP2 reply, as administrative commands get them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// `+…`
    Status(String),
    /// `-…`
    Error(String),
    /// `:…`
    Int(i64),
    /// `$…`
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`.
    Nil,
    /// `*…`
    Array(Vec<Value>),
}

impl Value {
    /// A bulk or status reply as text.
    pub(crate) fn text(&self) -> Option<String> {
        match self {
            Self::Status(s) => Some(s.clone()),
            Self::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// Reads one RESP2 reply.
fn read_value<'a, R>(
    r: &'a mut R,
) -> Pin<Box<dyn std::future::Future<Output = Result<Value, Error>> + Send + 'a>>
where
    R: AsyncBufRead + Unpin + Send,
{
    Box::pin(async move {
        let read_err = |e: io::Error| Error::Backend(format!("reading from the backend: {e}"));
        let mut line = String::new();
        if r.read_line(&mut line).await.map_err(read_err)? == 0 {
            return Err(Error::Backend("the backend closed the connection".into()));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let bad = || Error::Backend(format!("the backend sent an unexpected reply: {line:?}"));
        let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
        match kind {
            "+" => Ok(Value::Status(rest.to_string())),
            "-" => Ok(Value::Error(rest.to_string())),
            ":" => rest.parse().map(Value::Int).map_err(|_| bad()),
            "$" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                let Ok(len) = usize::try_from(len) else {
                    return Ok(Value::Nil);
                };
                let mut body = vec![0u8; len + 2];
                r.read_exact(&mut body).await.map_err(read_err)?;
                body.truncate(len);
                Ok(Value::Bulk(body))
            }
            "*" => {
                let len: i64 = rest.parse().map_err(|_| bad())?;
                let Ok(len) = usize::try_from(len) else {
                    return Ok(Value::Nil);
                };
                let mut items = Vec::with_capacity(len.min(1024));
                for _ in 0..len {
                    items.push(read_value(r).await?);
                }
                Ok(Value::Array(items))
            }
            _ => Err(bad()),
        }
    })
}

/// Sends one command (binary-safe arguments) and reads its reply. The connection's own
/// failures are `Err`; an error reply is `Ok(Value::Error(..))`.
pub(crate) async fn request<A: AsRef<[u8]>>(
    s: &mut BackendStream,
    args: &[A],
) -> Result<Value, Error> {
    let mut frame = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        frame.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        frame.extend_from_slice(a);
        frame.extend_from_slice(b"\r\n");
    }
    s.write_all(&frame)
        .await
        .map_err(|e| Error::Backend(format!("writing to the backend: {e}")))?;
    // Administrative connections have one request in flight, so the reader buffers nothing
    // past its reply.
    let mut reader = BufReader::new(s);
    read_value(&mut reader).await
}

/// Sends one command and reads its reply: a simple string, an error, an integer or a bulk
/// string (whose text is returned). The connection's own failures are `Err`.
pub(super) async fn command(s: &mut BackendStream, args: &[&str]) -> Result<Reply, Error> {
    Ok(match request(s, args).await? {
        Value::Error(text) => Reply::Error(text),
        Value::Status(text) => Reply::Other(text),
        Value::Int(n) => Reply::Other(n.to_string()),
        Value::Bulk(b) => Reply::Other(String::from_utf8_lossy(&b).into_owned()),
        Value::Nil | Value::Array(_) => Reply::Other(String::new()),
    })
}

/// Sends one command and reads a one-line reply (`+…`, `-…`, `:…`); errors become `Err`.
pub(crate) async fn simple_command(s: &mut BackendStream, args: &[&str]) -> Result<String, Error> {
    match command(s, args).await? {
        Reply::Other(text) => Ok(text),
        Reply::Error(text) => Err(Error::Backend(format!(
            "`{}` failed: {text}",
            args.first().copied().unwrap_or("")
        ))),
    }
}
