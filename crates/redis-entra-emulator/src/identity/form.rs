//! Reading an `application/x-www-form-urlencoded` request body, bounded in size.
//!
//! The token endpoint takes only form posts. Anything else (another content type, a body over
//! [`MAX_FORM_BODY`] bytes, bytes that are not UTF-8) is refused with a clear 400 in Entra's
//! error shape, never a panic.

use axum::body::Body;
use axum::http::{header, HeaderMap};

use super::errors::EntraError;

/// The largest form body the token endpoint reads: 64 KiB (a client assertion with a
/// certificate chain fits easily).
pub(crate) const MAX_FORM_BODY: usize = 64 * 1024;

/// The decoded parameters of a form body, in order. `Debug` shows the names only: values
/// include client secrets and assertions.
pub(crate) struct FormParams(Vec<(String, String)>);

impl std::fmt::Debug for FormParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

impl FormParams {
    /// Decodes an urlencoded string.
    pub fn parse(input: &[u8]) -> Self {
        Self(
            url::form_urlencoded::parse(input)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`, if it is present and not empty (Entra treats `name=` as
    /// missing).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// Reads and decodes a form body, refusing other content types and oversized bodies.
pub(crate) async fn read_form(headers: &HeaderMap, body: Body) -> Result<FormParams, EntraError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        let shown = if media_type.is_empty() {
            "none".to_string()
        } else {
            format!("'{}'", media_type.chars().take(100).collect::<String>())
        };
        return Err(EntraError::malformed_request(&format!(
            "the token endpoint accepts only Content-Type application/x-www-form-urlencoded, \
             not {shown}."
        )));
    }
    let bytes = axum::body::to_bytes(body, MAX_FORM_BODY)
        .await
        .map_err(|_| {
            EntraError::malformed_request(&format!(
                "the request body could not be read or is larger than {MAX_FORM_BODY} bytes."
            ))
        })?;
    if std::str::from_utf8(&bytes).is_err() {
        return Err(EntraError::malformed_request(
            "the request body is not valid UTF-8.",
        ));
    }
    Ok(FormParams::parse(&bytes))
}
