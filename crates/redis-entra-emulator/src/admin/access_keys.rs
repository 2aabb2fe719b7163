//! `/admin/access-keys`: the cache's access keys: read, enable or disable, regenerate.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{AdminState, JsonBody};
use crate::access_keys::KeyType;

/// The keys and whether they are enabled.
#[derive(Serialize)]
pub(crate) struct KeysView {
    enabled: bool,
    primary: String,
    secondary: String,
}

impl std::fmt::Debug for KeysView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeysView")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

fn view(state: &AdminState) -> Json<KeysView> {
    let keys = state.directory.access_keys();
    Json(KeysView {
        enabled: keys.enabled(),
        primary: keys.primary(),
        secondary: keys.secondary(),
    })
}

/// `PUT /admin/access-keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetEnabled {
    enabled: bool,
}

/// Which key `POST /admin/access-keys/regenerate` replaces.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Which {
    #[serde(alias = "Primary")]
    Primary,
    #[serde(alias = "Secondary")]
    Secondary,
}

/// `POST /admin/access-keys/regenerate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Regenerate {
    key: Which,
}

/// `GET /admin/access-keys`.
pub(crate) async fn get_keys(State(state): State<AdminState>) -> Json<KeysView> {
    view(&state)
}

/// `PUT /admin/access-keys`: disabling closes every access-key connection.
pub(crate) async fn set_enabled(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<SetEnabled>,
) -> Json<KeysView> {
    state.directory.access_keys().set_enabled(body.enabled);
    tracing::debug!(enabled = body.enabled, "admin: access keys switched");
    view(&state)
}

/// `POST /admin/access-keys/regenerate`.
pub(crate) async fn regenerate(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<Regenerate>,
) -> Json<KeysView> {
    let which = match body.key {
        Which::Primary => KeyType::Primary,
        Which::Secondary => KeyType::Secondary,
    };
    state.directory.access_keys().regenerate(which);
    tracing::debug!(key = which.name(), "admin: access key regenerated");
    view(&state)
}
