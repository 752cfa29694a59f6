//! Controller tests: openraft's own storage suite on our stores, restart durability, and a
//! torn Raft log tail.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};

use super::log_store::LogStore;
use super::raft::{StorageError, TypeConfig};
use super::state::{CommandResult, MetadataCommand, TopicConfigs};
use super::state_machine::StateMachine;
use super::{Controller, ControllerConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(dir.path())?;
        let sm = StateMachine::open(dir.path())?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

fn config(dir: &std::path::Path) -> ControllerConfig {
    ControllerConfig {
        node_id: 1,
        advertise: "127.0.0.1:1".into(),
        voters: vec![(1, "127.0.0.1:1".into())],
        dir: dir.to_path_buf(),
        broker_session_timeout: std::time::Duration::from_secs(6),
        broker_heartbeat_interval: std::time::Duration::from_secs(1),
        tls: None,
        dial_overrides: Default::default(),
    }
}

async fn allocate(c: &Controller) -> i64 {
    match c
        .propose(MetadataCommand::AllocateProducerIds { count: 1 })
        .await
        .unwrap()
    {
        CommandResult::ProducerIds { first, .. } => first,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_survives_restart_and_ids_are_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(config(dir.path())).await.unwrap();
    c.propose(MetadataCommand::RegisterBroker {
        id: 1,
        address: "127.0.0.1:1".into(),
        kafka_address: None,
        incarnation: 1,
    })
    .await
    .unwrap();
    let r = c
        .propose(MetadataCommand::CreateTopic {
            name: "logs".into(),
            id: None,
            partitions: 3,
            replication_factor: 1,
            configs: TopicConfigs::default(),
        })
        .await
        .unwrap();
    assert!(matches!(r, CommandResult::TopicCreated(_)), "{r:?}");
    let a = allocate(&c).await;
    let b = allocate(&c).await;
    assert_eq!(b, a + 1);
    c.shutdown().await;
    drop(c);
    let c: Arc<Controller> = Controller::start(config(dir.path())).await.unwrap();
    // The state is rebuilt once the log is re-applied (after this node leads again).
    let next = allocate(&c).await;
    assert_eq!(next, b + 1, "producer ids continue after a restart");
    let meta = c.metadata();
    assert_eq!(meta.topics["logs"].partitions.len(), 3);
    assert!(meta.brokers.contains_key(&1));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_entries_snapshot_purge_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(config(dir.path())).await.unwrap();
    let mut last = 0;
    for _ in 0..1_200 {
        last = allocate(&c).await;
    }
    c.shutdown().await;
    drop(c);
    assert!(
        dir.path().join("snapshot.json").exists(),
        "a snapshot was taken past 1000 entries"
    );
    let c = Controller::start(config(dir.path())).await.unwrap();
    assert_eq!(allocate(&c).await, last + 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_raft_log_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(config(dir.path())).await.unwrap();
    let a = allocate(&c).await;
    c.shutdown().await;
    drop(c);
    // A crash in the middle of writing a record: garbage after the last whole record.
    let path = dir.path().join("raft.log");
    let mut data = std::fs::read(&path).unwrap();
    let good = data.len();
    data.extend_from_slice(&[0, 0, 0, 50, 1, 2, 3, 4, b'{', b'"']);
    std::fs::write(&path, &data).unwrap();
    let c = Controller::start(config(dir.path())).await.unwrap();
    assert_eq!(allocate(&c).await, a + 1);
    c.shutdown().await;
    // The garbage is gone (the new entries follow the last good record).
    let data = std::fs::read(&path).unwrap();
    assert!(data.len() > good);
    assert_ne!(&data[good..good + 4], &[0, 0, 0, 50]);
}
