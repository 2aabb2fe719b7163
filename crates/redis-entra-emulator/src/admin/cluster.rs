//! `/admin/cluster/…`: cluster mode's nodes, node restarts and slot migrations. Without cluster
//! mode every route answers 404 `not_found`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError, JsonBody};
use crate::cluster::{Cluster, ClusterNode, SLOTS};

/// A node as the admin interface shows it.
#[derive(Debug, Serialize)]
pub(crate) struct NodeView {
    index: usize,
    id: String,
    /// The announced (gateway) endpoint.
    host: &'static str,
    port: u16,
    /// The `redis-server`'s own ports.
    backend_port: u16,
    bus_port: u16,
}

impl From<&ClusterNode> for NodeView {
    fn from(n: &ClusterNode) -> Self {
        Self {
            index: n.index,
            id: n.id.clone(),
            host: "localhost",
            port: n.gateway.port(),
            backend_port: n.backend.port(),
            bus_port: n.bus_port,
        }
    }
}

/// `POST /admin/cluster/slots/{slot}/migrate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Migrate {
    to: usize,
}

/// What a migration did.
#[derive(Debug, Serialize)]
pub(crate) struct Migrated {
    slot: u16,
    from: usize,
    to: usize,
    keys: usize,
}

fn cluster(state: &AdminState) -> Result<&Arc<Cluster>, ApiError> {
    state.cluster.as_ref().ok_or_else(|| {
        ApiError::not_found("the emulator is not in cluster mode (start it with --cluster N)")
    })
}

fn node_index(cluster: &Cluster, index: &str) -> Result<usize, ApiError> {
    index
        .parse::<usize>()
        .ok()
        .filter(|i| *i < cluster.nodes().len())
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "there is no cluster node {index:?}: nodes are 0 to {}",
                cluster.nodes().len().saturating_sub(1)
            ))
        })
}

/// `GET /admin/cluster/nodes`.
pub(crate) async fn nodes(
    State(state): State<AdminState>,
) -> Result<Json<Vec<NodeView>>, ApiError> {
    let cluster = cluster(&state)?;
    Ok(Json(cluster.nodes().iter().map(NodeView::from).collect()))
}

/// `POST /admin/cluster/nodes/{index}/restart`: answers once the node is back and the cluster
/// healthy.
pub(crate) async fn restart(
    State(state): State<AdminState>,
    Path(index): Path<String>,
) -> Result<Json<NodeView>, ApiError> {
    let cluster = cluster(&state)?;
    let index = node_index(cluster, &index)?;
    cluster.restart_node(index).await?;
    tracing::debug!(node = index, "admin: cluster node restarted");
    let node = cluster
        .nodes()
        .get(index)
        .ok_or_else(|| ApiError::not_found("the node is gone"))?;
    Ok(Json(NodeView::from(node)))
}

/// `POST /admin/cluster/slots/{slot}/migrate`: moves the slot from its owner to `to`.
pub(crate) async fn migrate(
    State(state): State<AdminState>,
    Path(slot): Path<String>,
    JsonBody(body): JsonBody<Migrate>,
) -> Result<Json<Migrated>, ApiError> {
    let cluster = cluster(&state)?;
    let slot = slot
        .parse::<u16>()
        .ok()
        .filter(|s| *s < SLOTS)
        .ok_or_else(|| {
            ApiError::not_found(format!("there is no slot {slot:?}: slots are 0 to 16383"))
        })?;
    let to = node_index(cluster, &body.to.to_string())?;
    let from = cluster.slot_owner(slot).await?;
    if from == to {
        return Err(ApiError::bad_request(format!(
            "slot {slot} is already on node {to}"
        )));
    }
    let keys = cluster.migrate_slot(slot, from, to).await?;
    tracing::debug!(slot, from, to, keys, "admin: slot migrated");
    Ok(Json(Migrated {
        slot,
        from,
        to,
        keys,
    }))
}
