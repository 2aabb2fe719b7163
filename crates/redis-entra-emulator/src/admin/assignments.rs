//! `/admin/assignments`: which access policy each identity has, and its alias.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError, JsonBody};
use crate::directory::{AccessPolicy, Assignment};
use crate::profile::{policies, Profile};

/// An assignment as the admin interface shows it.
#[derive(Debug, Serialize)]
pub(crate) struct AssignmentView {
    object_id: String,
    policy: String,
    rules: String,
    alias: Option<String>,
}

impl AssignmentView {
    /// The assignment as `profile`'s portal names it.
    pub(crate) fn of(a: Assignment, profile: Profile) -> Self {
        Self {
            policy: policies::display_name(profile, &a.policy).to_string(),
            rules: policies::display_rules(profile, &a.policy).to_string(),
            object_id: a.object_id,
            alias: a.alias,
        }
    }
}

/// `PUT /admin/assignments/{object_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutAssignment {
    /// A built-in policy's name or a custom policy's.
    policy: String,
    /// When given: defines (or updates) the custom policy `policy` with these rules first.
    #[serde(default)]
    rules: Option<String>,
    /// The `objectIdAlias`.
    #[serde(default)]
    alias: Option<String>,
}

/// The longest alias.
const MAX_ALIAS: usize = 128;

fn check_alias(alias: &str) -> Result<(), ApiError> {
    if alias.is_empty()
        || alias.len() > MAX_ALIAS
        || alias.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::bad_request(format!(
            "alias must be 1 to {MAX_ALIAS} characters without spaces or control characters"
        )));
    }
    if alias == "default" {
        return Err(ApiError::bad_request(
            "alias may not be \"default\": that username is for access keys",
        ));
    }
    Ok(())
}

/// `GET /admin/assignments`.
pub(crate) async fn list(State(state): State<AdminState>) -> Json<Vec<AssignmentView>> {
    Json(
        state
            .directory
            .assignments()
            .into_iter()
            .map(|a| AssignmentView::of(a, state.profile))
            .collect(),
    )
}

/// `PUT /admin/assignments/{object_id}`.
pub(crate) async fn put(
    State(state): State<AdminState>,
    Path(object_id): Path<String>,
    JsonBody(body): JsonBody<PutAssignment>,
) -> Result<Json<AssignmentView>, ApiError> {
    if uuid::Uuid::parse_str(&object_id).is_err() {
        return Err(ApiError::bad_request(format!(
            "{object_id:?} is not an object id: use the identity's GUID (see GET /admin/identities)"
        )));
    }
    if let Some(alias) = &body.alias {
        check_alias(alias)?;
    }
    policies::check_alias(state.profile, body.alias.as_deref())?;
    let policy = match (&body.rules, state.profile) {
        (rules, Profile::AzureManagedRedis) => {
            policies::managed_redis_assignment(&object_id, &body.policy, rules.as_deref())?
        }
        (Some(rules), _) => AccessPolicy::custom(&body.policy, rules)?,
        (None, _) => state.directory.policy_named(&body.policy).ok_or_else(|| {
            ApiError::bad_request(format!(
                "no access policy is called {:?}: use Data Owner, Data Contributor, Data Reader, \
                 a custom policy created with POST /admin/policies, or give \"rules\" to define one",
                body.policy
            ))
        })?,
    };
    state.backend.ensure_policy(&policy).await?;
    state.directory.define_policy(policy.clone());
    state
        .directory
        .assign_with_alias(&object_id, policy.clone(), body.alias.as_deref());
    // The identity's own backend user follows, in place: its live connections get the new
    // rules at once.
    state.backend.ensure_identity(&object_id, &policy).await?;
    let assignment = state
        .directory
        .assignment_of(&object_id)
        .ok_or_else(|| ApiError::not_found("the assignment vanished: try again"))?;
    tracing::debug!(
        %object_id,
        policy = assignment.policy.name(),
        "admin: policy assigned"
    );
    Ok(Json(AssignmentView::of(assignment, state.profile)))
}

/// `DELETE /admin/assignments/{object_id}`.
pub(crate) async fn delete(
    State(state): State<AdminState>,
    Path(object_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    match state.directory.remove_assignment(&object_id) {
        Some(_) => {
            // Redis closes the identity's live connections with its user.
            state.backend.remove_identity(&object_id).await?;
            tracing::debug!(%object_id, "admin: assignment removed");
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::not_found(format!(
            "{object_id:?} has no access policy assigned"
        ))),
    }
}
