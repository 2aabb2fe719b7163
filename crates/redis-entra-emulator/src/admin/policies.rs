//! `/admin/policies`: the built-in access policies and custom ones.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError, JsonBody};
use crate::directory::AccessPolicy;
use crate::profile::{policies, Profile};

/// A policy as the admin interface shows it.
#[derive(Debug, Serialize)]
pub(crate) struct PolicyView {
    name: String,
    rules: String,
    builtin: bool,
    backend_user: String,
}

impl PolicyView {
    fn of(p: &AccessPolicy, profile: Profile) -> Self {
        Self {
            name: policies::display_name(profile, p).to_string(),
            rules: policies::display_rules(profile, p).to_string(),
            builtin: p.is_builtin(),
            backend_user: p.backend_user().into_owned(),
        }
    }
}

/// `POST /admin/policies`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreatePolicy {
    name: String,
    rules: String,
}

/// `GET /admin/policies`: under Azure Managed Redis only `default` (per-assignment access
/// strings show in `/admin/assignments`).
pub(crate) async fn list(State(state): State<AdminState>) -> Json<Vec<PolicyView>> {
    let builtins = policies::builtins(state.profile);
    let custom = match state.profile {
        Profile::AzureCacheForRedis => state.directory.custom_policies(),
        _ => Vec::new(),
    };
    Json(
        builtins
            .iter()
            .chain(custom.iter())
            .map(|p| PolicyView::of(p, state.profile))
            .collect(),
    )
}

/// `POST /admin/policies`: 201 for a new policy, 200 for an update; 400 under Azure Managed
/// Redis, which has no custom policies.
pub(crate) async fn create(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<CreatePolicy>,
) -> Result<(StatusCode, Json<PolicyView>), ApiError> {
    policies::check_custom_policy(state.profile)?;
    let policy = AccessPolicy::custom(&body.name, &body.rules)?;
    state.backend.ensure_policy(&policy).await?;
    let created = state.directory.define_policy(policy.clone());
    state.backend.update_identities(&policy).await?;
    tracing::debug!(
        name = policy.name(),
        created,
        "admin: custom policy defined"
    );
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(PolicyView::of(&policy, state.profile))))
}
