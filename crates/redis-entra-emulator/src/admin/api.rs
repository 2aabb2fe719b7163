//! The admin interface's plumbing: its error replies, its JSON body extractor and its bearer
//! check.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::AdminState;
use crate::Error;

/// An admin error: HTTP status, a short machine-readable code and a message for people,
/// sent as `{"error": code, "message": message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// `bad_request`, `unauthorized`, `not_found`, `invalid_policy`, …
    pub error: &'static str,
    /// What was wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: "bad_request",
            message: message.into(),
        }
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            error: "not_found",
            message: message.into(),
        }
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "unauthorized",
            message: "the admin interface needs `Authorization: Bearer <key>`, with the key in \
                      REDIS_ENTRA_EMULATOR_ADMIN_KEY (the emulator's env file)"
                .into(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidPolicy(message) => Self {
                status: StatusCode::BAD_REQUEST,
                error: "invalid_policy",
                message,
            },
            other => Self {
                status: StatusCode::BAD_GATEWAY,
                error: "backend_error",
                message: other.to_string(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({ "error": self.error, "message": self.message })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A JSON request body. Unlike axum's `Json`, every failure (no body, bad JSON, a wrong type,
/// an unknown or missing field) is a 400 whose message says what was wrong; the content type is
/// not checked.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "the request needs a JSON body (see the admin module's documentation)",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// Compares without leaking, through timing, how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lets a request through only with `Authorization: Bearer <admin key>`.
pub(crate) async fn require_key(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim());
    match presented {
        Some(key) if constant_time_eq(key.as_bytes(), state.admin_key.as_bytes()) => {
            next.run(request).await
        }
        _ => ApiError::unauthorized().into_response(),
    }
}

/// Logs `method path -> status` at debug level: never a header, body or query.
pub(crate) async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::debug!(
        target: "redis_entra_emulator::admin",
        %method,
        %path,
        status = response.status().as_u16(),
        "admin request"
    );
    response
}

/// Unknown paths.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such admin endpoint: see the admin module's documentation")
}

/// Known paths, unknown methods.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        error: "method_not_allowed",
        message: "this admin endpoint does not take that method".into(),
    }
}
