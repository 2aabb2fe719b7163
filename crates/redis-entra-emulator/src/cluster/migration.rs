//! Slot migration, as `redis-cli --cluster reshard` does it: importing and migrating marks,
//! `MIGRATE … KEYS` in batches, then the slot given to its new node everywhere.

use tracing::debug;

use super::admin_commands::expect_ok;
use super::slots::check_slot;
use super::Cluster;
use crate::backend::{request, Value, ADMIN_USER};
use crate::Error;

/// Keys moved per `MIGRATE`.
const MIGRATE_BATCH: usize = 100;
/// `MIGRATE`'s timeout, in milliseconds.
const MIGRATE_TIMEOUT_MS: &str = "10000";

impl Cluster {
    /// Moves `slot` and its keys from node `from` to node `to`:
    /// [`begin_slot_migration`](Self::begin_slot_migration) then
    /// [`finish_slot_migration`](Self::finish_slot_migration). Returns how many keys moved.
    pub async fn migrate_slot(&self, slot: u16, from: usize, to: usize) -> Result<usize, Error> {
        self.begin_slot_migration(slot, from, to).await?;
        self.finish_slot_migration(slot, from, to).await
    }

    /// Marks `slot` as importing on node `to` and migrating on node `from` (which must own
    /// it). From then on `from` still serves the slot's existing keys and redirects requests
    /// for missing ones with `-ASK <slot> <to's gateway>`.
    pub async fn begin_slot_migration(
        &self,
        slot: u16,
        from: usize,
        to: usize,
    ) -> Result<(), Error> {
        check_slot(slot)?;
        let (source, target) = (self.node(from)?, self.node(to)?);
        if from == to {
            return Err(Error::Config(format!(
                "slot {slot} cannot migrate from node {from} to itself"
            )));
        }
        let owner = self.slot_owner(slot).await?;
        if owner != from {
            return Err(Error::Config(format!(
                "slot {slot} is served by node {owner}, not node {from}"
            )));
        }
        let slot_text = slot.to_string();
        let mut conn = target.backend.admin_connection().await?;
        expect_ok(
            &mut conn,
            &[
                "CLUSTER",
                "SETSLOT",
                &slot_text,
                "IMPORTING",
                &self.info[from].id,
            ],
        )
        .await?;
        let mut conn = source.backend.admin_connection().await?;
        expect_ok(
            &mut conn,
            &[
                "CLUSTER",
                "SETSLOT",
                &slot_text,
                "MIGRATING",
                &self.info[to].id,
            ],
        )
        .await?;
        debug!(slot, from, to, "slot migration begun");
        Ok(())
    }

    /// Moves the keys of `slot` from node `from` to node `to` (`MIGRATE … KEYS`, in batches),
    /// then gives the slot to `to` on every node (`CLUSTER SETSLOT <slot> NODE`), after which
    /// `from` answers `-MOVED`. Expects [`begin_slot_migration`](Self::begin_slot_migration)
    /// first. Returns how many keys moved.
    pub async fn finish_slot_migration(
        &self,
        slot: u16,
        from: usize,
        to: usize,
    ) -> Result<usize, Error> {
        check_slot(slot)?;
        let (source, target) = (self.node(from)?, self.node(to)?);
        let slot_text = slot.to_string();
        let batch = MIGRATE_BATCH.to_string();
        let target_port = self.info[to].backend.port().to_string();
        let mut conn = source.backend.admin_connection().await?;
        let mut moved = 0;
        loop {
            let keys = match request(
                &mut conn,
                &["CLUSTER", "GETKEYSINSLOT", slot_text.as_str(), &batch],
            )
            .await?
            {
                Value::Array(keys) => keys,
                Value::Error(text) => {
                    return Err(Error::Backend(format!("CLUSTER GETKEYSINSLOT: {text}")))
                }
                other => {
                    return Err(Error::Backend(format!(
                        "CLUSTER GETKEYSINSLOT answered {other:?}"
                    )))
                }
            };
            if keys.is_empty() {
                break;
            }
            let mut args: Vec<Vec<u8>> = [
                "MIGRATE",
                "127.0.0.1",
                &target_port,
                "",
                "0",
                MIGRATE_TIMEOUT_MS,
                "AUTH2",
                ADMIN_USER,
                &self.admin_password,
                "KEYS",
            ]
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect();
            let count = keys.len();
            for key in keys {
                match key {
                    Value::Bulk(k) => args.push(k),
                    other => {
                        return Err(Error::Backend(format!(
                            "CLUSTER GETKEYSINSLOT gave a key as {other:?}"
                        )))
                    }
                }
            }
            match request(&mut conn, &args).await? {
                Value::Error(text) => {
                    return Err(Error::Backend(format!(
                        "MIGRATE of slot {slot} from node {from} to node {to}: {text}"
                    )))
                }
                _ => moved += count,
            }
        }
        let set_node = ["CLUSTER", "SETSLOT", &slot_text, "NODE", &self.info[to].id];
        // The target first, then the source, then everyone else (as redis-cli does).
        let mut order = vec![target, source];
        order.extend(
            self.nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != from && *i != to)
                .map(|(_, n)| n),
        );
        for node in order {
            let mut conn = node.backend.admin_connection().await?;
            expect_ok(&mut conn, &set_node).await?;
        }
        debug!(slot, from, to, keys = moved, "slot migrated");
        Ok(moved)
    }
}
