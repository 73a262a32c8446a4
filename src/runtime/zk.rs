//! ZooKeeper glue (membership). Being written.
