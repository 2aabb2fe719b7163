//! `/admin/identities`: the tenant's service principals and managed identities.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::assignments::AssignmentView;
use super::{AdminState, ApiError, JsonBody};
use crate::directory::{Principal, PrincipalKind};

/// The kinds of identity the admin interface creates.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Kind {
    ServicePrincipal,
    #[serde(alias = "managed-identity", alias = "system-assigned")]
    SystemAssignedIdentity,
    #[serde(alias = "user-assigned")]
    UserAssignedIdentity,
}

fn kind_name(kind: &PrincipalKind) -> &'static str {
    match kind {
        PrincipalKind::ServicePrincipal => "service-principal",
        PrincipalKind::SystemAssignedIdentity => "system-assigned-identity",
        PrincipalKind::UserAssignedIdentity => "user-assigned-identity",
        PrincipalKind::User => "user",
    }
}

/// `POST /admin/identities`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateIdentity {
    kind: Kind,
    #[serde(default)]
    display_name: Option<String>,
    /// For a managed identity: whether it is attached to the emulated compute resource, so
    /// that its managed-identity endpoints serve it (default true).
    #[serde(default)]
    attached: Option<bool>,
}

/// An identity as the admin interface shows it.
#[derive(Debug, Serialize)]
pub(crate) struct IdentityView {
    display_name: String,
    kind: &'static str,
    client_id: String,
    object_id: String,
    resource_id: Option<String>,
    /// Only in the answer to the creation of a service principal.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    assignment: Option<AssignmentView>,
}

impl IdentityView {
    fn of(principal: Principal, state: &AdminState, with_secret: bool) -> Self {
        let assignment = state
            .directory
            .assignment_of(&principal.object_id)
            .map(|a| AssignmentView::of(a, state.profile));
        Self {
            kind: kind_name(&principal.kind),
            display_name: principal.display_name,
            client_id: principal.client_id,
            object_id: principal.object_id,
            resource_id: principal.resource_id,
            secret: if with_secret { principal.secret } else { None },
            assignment,
        }
    }
}

/// The longest display name.
const MAX_DISPLAY_NAME: usize = 120;

/// `GET /admin/identities`.
pub(crate) async fn list(State(state): State<AdminState>) -> Json<Vec<IdentityView>> {
    Json(
        state
            .directory
            .principals()
            .into_iter()
            .map(|p| IdentityView::of(p, &state, false))
            .collect(),
    )
}

/// `GET /admin/identities/{object_id}`.
pub(crate) async fn get_one(
    State(state): State<AdminState>,
    Path(object_id): Path<String>,
) -> Result<Json<IdentityView>, ApiError> {
    let principal = state
        .directory
        .by_object_id(&object_id)
        .ok_or_else(|| ApiError::not_found(format!("no identity has object id {object_id:?}")))?;
    Ok(Json(IdentityView::of(principal, &state, false)))
}

/// `POST /admin/identities`.
pub(crate) async fn create(
    State(state): State<AdminState>,
    JsonBody(body): JsonBody<CreateIdentity>,
) -> Result<(StatusCode, Json<IdentityView>), ApiError> {
    let display_name = body
        .display_name
        .unwrap_or_else(|| format!("admin-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let usable = !display_name.trim().is_empty()
        && display_name.len() <= MAX_DISPLAY_NAME
        && !display_name.contains(['/', '?', '#'])
        && !display_name.chars().any(char::is_control);
    if !usable {
        return Err(ApiError::bad_request(format!(
            "display_name must be 1 to {MAX_DISPLAY_NAME} characters, without '/', '?', '#' \
             or control characters (it becomes part of a managed identity's resource id)"
        )));
    }
    let directory = &state.directory;
    let principal = match body.kind {
        Kind::ServicePrincipal => directory.create_service_principal(&display_name),
        Kind::SystemAssignedIdentity | Kind::UserAssignedIdentity => {
            let user_assigned = matches!(body.kind, Kind::UserAssignedIdentity);
            let principal = directory.create_detached_identity(&display_name, user_assigned);
            if body.attached.unwrap_or(true) {
                directory.attach_identity(&principal.object_id);
            }
            principal
        }
    };
    tracing::debug!(
        object_id = %principal.object_id,
        kind = kind_name(&principal.kind),
        "admin: identity created"
    );
    Ok((
        StatusCode::CREATED,
        Json(IdentityView::of(principal, &state, true)),
    ))
}
