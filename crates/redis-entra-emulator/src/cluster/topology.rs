//! The cluster as its nodes see it (`CLUSTER NODES`, `CLUSTER INFO`): who serves a slot, and
//! whether every node agrees the cluster is healthy.

use std::time::Duration;

use tokio::time::Instant;

use super::admin_commands::expect_text;
use super::slots::check_slot;
use super::Cluster;
use crate::backend::Backend;
use crate::Error;

/// How long the cluster has to agree (`cluster_state:ok` everywhere).
const CLUSTER_READY: Duration = Duration::from_secs(30);

impl Cluster {
    /// The index of the node that serves `slot`, as node 0 (or, if it is down, the first node
    /// that answers) sees it.
    pub async fn slot_owner(&self, slot: u16) -> Result<usize, Error> {
        check_slot(slot)?;
        let mut last = None;
        for node in &self.nodes {
            match self.topology(&node.backend).await {
                Ok(view) => {
                    return view
                        .iter()
                        .find(|n| n.serves(slot))
                        .and_then(|n| self.index_of(&n.id))
                        .ok_or_else(|| Error::Backend(format!("no node serves slot {slot}")))
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Backend("the cluster has no node".into())))
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.info.iter().position(|i| i.id == id)
    }

    /// `CLUSTER NODES` from one node, parsed.
    async fn topology(&self, backend: &Backend) -> Result<Vec<NodeLine>, Error> {
        let mut conn = backend.admin_connection().await?;
        let text = expect_text(&mut conn, &["CLUSTER", "NODES"]).await?;
        Ok(text.lines().filter_map(NodeLine::parse).collect())
    }

    /// Waits until every node reports `cluster_state:ok`, knows every node, flags none as
    /// failing or in handshake, and (Redis 7) knows every node's hostname.
    pub(super) async fn wait_healthy(&self) -> Result<(), Error> {
        let deadline = Instant::now() + CLUSTER_READY;
        loop {
            let problem = self.health_problem().await;
            match problem {
                None => return Ok(()),
                Some(problem) if Instant::now() >= deadline => {
                    return Err(Error::Backend(format!(
                        "the cluster did not become healthy in {} s: {problem}",
                        CLUSTER_READY.as_secs()
                    )))
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// What keeps the cluster from being healthy, if anything.
    async fn health_problem(&self) -> Option<String> {
        let n = self.nodes.len();
        for (i, node) in self.nodes.iter().enumerate() {
            let mut conn = match node.backend.admin_connection().await {
                Ok(conn) => conn,
                Err(e) => return Some(format!("node {i}: {e}")),
            };
            let info = match expect_text(&mut conn, &["CLUSTER", "INFO"]).await {
                Ok(info) => info,
                Err(e) => return Some(format!("node {i}: {e}")),
            };
            if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
                return Some(format!("node {i} is not in cluster_state:ok"));
            }
            let view = match expect_text(&mut conn, &["CLUSTER", "NODES"]).await {
                Ok(text) => text.lines().filter_map(NodeLine::parse).collect::<Vec<_>>(),
                Err(e) => return Some(format!("node {i}: {e}")),
            };
            if view.len() != n {
                return Some(format!("node {i} knows {} nodes of {n}", view.len()));
            }
            if let Some(bad) = view.iter().find(|l| {
                l.flags
                    .split(',')
                    .any(|f| matches!(f, "fail" | "fail?" | "handshake" | "noaddr"))
                    || (self.hostnames && !l.has_hostname)
            }) {
                return Some(format!(
                    "node {i} sees {} as {} (hostname known: {})",
                    bad.id, bad.flags, bad.has_hostname
                ));
            }
        }
        None
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct NodeLine {
    id: String,
    flags: String,
    has_hostname: bool,
    /// Slot ranges served (importing/migrating markers left out).
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    /// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>…`
    fn parse(line: &str) -> Option<NodeLine> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let id = fields.first()?.to_string();
        let address = fields.get(1)?;
        let flags = fields.get(2)?.to_string();
        let has_hostname = address
            .split_once(',')
            .is_some_and(|(_, host)| !host.is_empty());
        let slots = fields
            .iter()
            .skip(8)
            .filter(|f| !f.starts_with('['))
            .filter_map(|f| match f.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => {
                    let s = f.parse().ok()?;
                    Some((s, s))
                }
            })
            .collect();
        Some(NodeLine {
            id,
            flags,
            has_hostname,
            slots,
        })
    }

    fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lines_parse() {
        let line = "07bd 127.0.0.1:9101@17101,localhost myself,master - 0 1795 1 connected 0-5460 7000 [5461->-f797]";
        let parsed = NodeLine::parse(line).expect("parses");
        assert_eq!(parsed.id, "07bd");
        assert!(parsed.has_hostname);
        assert_eq!(parsed.slots, vec![(0, 5460), (7000, 7000)]);
        assert!(parsed.serves(7000) && !parsed.serves(5461));
        let bare =
            NodeLine::parse("f797 127.0.0.1:9102@17102 master - 0 0 0 connected").expect("parses");
        assert!(!bare.has_hostname && bare.slots.is_empty());
    }
}
