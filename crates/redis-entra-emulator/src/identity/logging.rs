//! Request logging for the identity endpoints.
//!
//! One debug line per request with the method, the path (never the query string, never a
//! header value) and the status. Handlers add their own line naming the client id and the
//! outcome; neither ever carries a secret, token, assertion or `Authorization` value.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

/// Logs `method path -> status` at debug level.
pub(crate) async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::debug!(
        target: "redis_entra_emulator::identity",
        %method,
        %path,
        status = response.status().as_u16(),
        "identity request"
    );
    response
}
