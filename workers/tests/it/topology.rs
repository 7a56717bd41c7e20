//! The broker topology across releases: a build starts beside queues an
//! older release declared with other arguments, and a conflict that no retry
//! can mend is said at once, naming what conflicts.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use saga_protocol::messages::WorkerKind;
use saga_shared::broker::{Broker, BrokerError, Outgoing};
use saga_shared::topology::Topology;
use saga_testkit::{self as testing, TopologyGuard};
use tokio_util::sync::CancellationToken;

async fn connection() -> Connection {
    Connection::connect(&testing::amqp_url(), ConnectionProperties::default())
        .await
        .expect("the test connects to RabbitMQ")
}

/// The queues as an older release declared them: every setting an
/// argument; v0.2.0 also the initial group size, which v0.1.0 did not
/// declare (so the two could not both declare the same queue).
async fn declare_as_release(connection: &Connection, topology: &Topology, group_size: bool) {
    let channel = connection.create_channel().await.unwrap();
    for worker in WorkerKind::ALL {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        if group_size {
            args.insert("x-quorum-initial-group-size".into(), AMQPValue::LongInt(3));
        }
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(topology.dead_letter_exchange().into()),
        );
        args.insert("x-delivery-limit".into(), AMQPValue::LongInt(5));
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(
                topology.command_queue(worker).as_str().into(),
                options,
                args,
            )
            .await
            .expect("an old release's queue declared");
    }
}

#[tokio::test]
async fn a_new_build_starts_beside_queues_v0_1_declared() {
    starts_beside_queues_an_older_release_declared(false).await;
}

#[tokio::test]
async fn a_new_build_starts_beside_queues_v0_2_declared() {
    starts_beside_queues_an_older_release_declared(true).await;
}

/// Connects declaring `topology`; the answer, accepted or refused, comes at
/// once: not from a retry loop, as if RabbitMQ were away.
async fn connect_at_once(topology: &Topology) -> Result<Broker, BrokerError> {
    let stop = CancellationToken::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        Broker::connect(&testing::amqp_url(), topology.clone(), "test", &stop),
    )
    .await
    .expect("answered at once, not retried as if RabbitMQ were away")
}

async fn starts_beside_queues_an_older_release_declared(group_size: bool) {
    testing::init_tracing();
    let prefix = testing::random_prefix();
    let _guard = TopologyGuard::new(&prefix);
    let topology = Topology::new(&prefix);
    let connection = connection().await;
    declare_as_release(&connection, &topology, group_size).await;

    let broker = connect_at_once(&topology)
        .await
        .expect("the old queues are accepted as they are");

    // The old queue is bound and takes commands.
    broker
        .publish(&Outgoing {
            exchange: topology.command_exchange(),
            routing_key: "tax.calculate".into(),
            body: b"{}".to_vec(),
            message_id: uuid::Uuid::new_v4(),
            saga_id: uuid::Uuid::new_v4(),
            message_type: "tax.calculate".into(),
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        })
        .await
        .expect("routed to the old queue and confirmed");
    let channel = connection.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let queue = channel
        .queue_declare(
            topology.command_queue(WorkerKind::Tax).as_str().into(),
            passive,
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(queue.message_count(), 1);
    broker.close().await;
    let _ = connection.close(200, "bye".into()).await;
}

#[tokio::test]
async fn a_conflicting_declaration_is_a_permanent_error_naming_what_conflicts() {
    testing::init_tracing();
    let prefix = testing::random_prefix();
    let _guard = TopologyGuard::new(&prefix);
    let topology = Topology::new(&prefix);
    let connection = connection().await;
    // Someone made the command exchange a direct one.
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_declare(
            topology.command_exchange().as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();

    let error = connect_at_once(&topology)
        .await
        .err()
        .expect("a conflicting exchange refuses the connection");
    assert!(
        matches!(error, BrokerError::TopologyConflict(_)),
        "{error:?}"
    );
    let said = error.to_string();
    assert!(said.contains(&topology.command_exchange()), "{said}");
    assert!(said.contains("type"), "names the setting: {said}");
    assert!(!said.contains("not reachable"), "{said}");
    let _ = connection.close(200, "bye".into()).await;
}
