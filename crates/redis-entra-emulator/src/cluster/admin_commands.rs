//! Administrative commands whose reply must be `+OK` or text, with an error that names them.

use crate::backend::{request, BackendStream, Value};
use crate::Error;

/// Sends a command that must answer `+OK`.
pub(super) async fn expect_ok<A: AsRef<[u8]>>(
    conn: &mut BackendStream,
    args: &[A],
) -> Result<(), Error> {
    match request(conn, args).await? {
        Value::Status(_) => Ok(()),
        other => Err(unexpected(args, other)),
    }
}

/// Sends a command that answers a bulk or simple string.
pub(super) async fn expect_text(conn: &mut BackendStream, args: &[&str]) -> Result<String, Error> {
    let reply = request(conn, args).await?;
    reply.text().ok_or_else(|| unexpected(args, reply))
}

fn unexpected<A: AsRef<[u8]>>(args: &[A], reply: Value) -> Error {
    let name: Vec<String> = args
        .iter()
        .take(2)
        .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
        .collect();
    match reply {
        Value::Error(text) => Error::Backend(format!("`{}` failed: {text}", name.join(" "))),
        other => Error::Backend(format!("`{}` answered {other:?}", name.join(" "))),
    }
}
