//! The chain's eviction record in ZooKeeper: one persistent znode beside the root whose data is
//! `<reporter hex> <suspect hex>` and whose version orders evictions (see `core::suspicion`).

use tracing::{info, warn};
use zookeeper_async::{Acl, CreateMode, ZkError};

use super::session::{OpError, Target, ZkSession};
use crate::core::{EvictionRecord, NodeId};

/// Reads the record and arms a watch on it (on its creation, if it does not exist yet).
/// `Ok(None)`: there is no record, or it cannot be parsed (logged; treated as none).
pub(super) async fn read_and_watch(target: &Target, session: &ZkSession) -> Result<Option<EvictionRecord>, OpError> {
    let path = target.eviction_record();
    match session.op(session.zk().get_data_w(&path, session.watch_callback())).await {
        Ok((data, stat)) => Ok(record(&path, &data, stat.version)),
        Err(e) if e.is(ZkError::NoNode) => {
            // Watch for its creation instead; it may have been created in between.
            match session.op(session.zk().exists_w(&path, session.watch_callback())).await? {
                None => Ok(None),
                Some(_) => Box::pin(read_and_watch(target, session)).await,
            }
        }
        Err(e) => Err(e),
    }
}

/// Reads the record without a watch.
pub(super) async fn read(target: &Target, session: &ZkSession) -> Result<Option<EvictionRecord>, OpError> {
    let path = target.eviction_record();
    match session.op(session.zk().get_data(&path, false)).await {
        Ok((data, stat)) => Ok(record(&path, &data, stat.version)),
        Err(e) if e.is(ZkError::NoNode) => Ok(None),
        Err(e) => Err(e),
    }
}

fn record(path: &str, data: &[u8], version: i32) -> Option<EvictionRecord> {
    let Some((reporter, suspect)) = parse(data) else {
        warn!("ignoring {path}: not `<reporter hex> <suspect hex>`");
        return None;
    };
    Some(EvictionRecord {
        // ZooKeeper's data version only grows while the znode lives; it is never deleted by
        // us, and a recreated one starts again at 0, which still differs from the last.
        version: version as u32 as u64,
        reporter,
        suspect,
    })
}

/// Writes `reporter evicts suspect` if the record is still at `seen_version` (`None`: absent).
/// Returns whether it was written; a lost race (someone evicted first) writes nothing. Nobody
/// is removed here: the suspect leaves by itself when it sees the record, or the reporter
/// removes it once its lease is over (`remove`).
pub(super) async fn evict(
    target: &Target,
    session: &ZkSession,
    reporter: NodeId,
    suspect: NodeId,
    seen_version: Option<u64>,
) -> Result<bool, OpError> {
    let path = target.eviction_record();
    let data = format!("{reporter:x} {suspect:x}").into_bytes();
    let written = match seen_version {
        None => {
            if let Err(e) = session.ensure_path(&target.meta).await {
                warn!("cannot create {}: {e:#}", target.meta);
                return Ok(false);
            }
            let acl = Acl::open_unsafe().clone();
            match session.op(session.zk().create(&path, data, acl, CreateMode::Persistent)).await {
                Ok(_) => true,
                Err(e) if e.is(ZkError::NodeExists) => false,
                Err(e) => return Err(e),
            }
        }
        Some(v) => {
            let Ok(version) = i32::try_from(v) else { return Ok(false) };
            match session.op(session.zk().set_data(&path, data, Some(version))).await {
                Ok(_) => true,
                Err(e) if e.is(ZkError::BadVersion) || e.is(ZkError::NoNode) => false,
                Err(e) => return Err(e),
            }
        }
    };
    if !written {
        info!("another eviction was recorded first; not evicting {suspect:x}");
    } else if reporter == suspect {
        warn!("recorded that this replica leaves the chain: it could not reach two successors in a row");
    } else {
        warn!("recorded the eviction of {suspect:x}: it did not answer us for the suspicion timeout");
    }
    Ok(written)
}

/// Deletes an evicted replica's member znode, if it is still there.
pub(super) async fn remove(target: &Target, session: &ZkSession, suspect: NodeId) -> Result<(), OpError> {
    let member = target.child(&format!("{suspect:x}"));
    match session.op(session.zk().delete(&member, None)).await {
        Ok(()) => {
            warn!("removed {member}: evicted, and its lease is over");
            Ok(())
        }
        Err(e) if e.is(ZkError::NoNode) => Ok(()),
        Err(e) => Err(e),
    }
}

fn parse(data: &[u8]) -> Option<(NodeId, NodeId)> {
    let text = std::str::from_utf8(data).ok()?;
    let mut parts = text.split_whitespace();
    let reporter = NodeId::from_str_radix(parts.next()?, 16).ok()?;
    let suspect = NodeId::from_str_radix(parts.next()?, 16).ok()?;
    parts.next().is_none().then_some((reporter, suspect))
}

#[cfg(test)]
mod tests {
    use super::{parse, record};
    use crate::core::EvictionRecord;

    #[test]
    fn record_data_is_two_hex_ids() {
        assert_eq!(parse(b"1a2b 3c"), Some((0x1a2b, 0x3c)));
        assert_eq!(parse(b"1a2b"), None);
        assert_eq!(parse(b"1a2b 3c 4"), None);
        assert_eq!(parse(b"xyz 3c"), None);
        assert_eq!(parse(&[0xff, 0x20, 0x31]), None);
    }

    #[test]
    fn the_record_carries_the_znode_version() {
        // The version is how a replica tells a new eviction from one it has seen, and the one
        // the next reporter must name for its write to win: it is the znode's, not made up.
        assert_eq!(
            record("/c.chainrep/eviction", b"1a 2b", 5),
            Some(EvictionRecord {
                version: 5,
                reporter: 0x1a,
                suspect: 0x2b,
            })
        );
        assert_eq!(record("/c.chainrep/eviction", b"1a", 5), None);
    }
}
