//! Round trips to PostgreSQL per command, counted on the wire: the test
//! kit's proxy between the worker's pool and the server counts the server's
//! ReadyForQuery messages, one per round trip the client waits for (a
//! statement, a `BEGIN`, a `COMMIT`, the pool's ping before it hands out a
//! connection). The general path is measured through a wrapper that hides
//! the handler's one-statement paths, so old and new are compared in one
//! run on one machine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use saga_protocol::messages::{Command, Outcome};
use saga_protocol::{Envelope, WorkerKind};
use saga_testkit::proxy::{Proxy, Side, Wire};
use saga_testkit::TestDatabase;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use workers::inventory::{self, catalogue, Inventory};
use workers::payment::{self, Payment, PaymentConfig, Simulator};
use workers::runtime::{handle_command, Decision, ExternalCall, Handler, Settlement};

use crate::{charge_of, migrated, reserve_of};

/// Counts ReadyForQuery ('Z') messages from PostgreSQL on the proxy
/// between the worker's pool and the server.
struct CountingProxy {
    counts: Arc<Counts>,
    url: String,
    _proxy: Proxy,
}

#[derive(Default)]
struct Counts {
    /// ReadyForQuery messages: round trips.
    ready: AtomicU64,
    /// Of those, the pool's pings (on checkout and on return).
    pings: AtomicU64,
}

/// Round trips of one command: statements (`BEGIN` and `COMMIT` included)
/// and the pool's pings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Trips {
    statements: u64,
    pings: u64,
}

impl CountingProxy {
    async fn start(db: &TestDatabase) -> CountingProxy {
        let (scheme_user, rest) = db.url.split_once('@').expect("a URL with a user");
        let (upstream, path) = rest.split_once('/').expect("a URL with a database");
        let counts = Arc::new(Counts::default());
        let counter = counts.clone();
        let proxy = Proxy::start_watching(upstream, Wire::Postgres, move |side| {
            let counts = counter.clone();
            match side {
                Side::Client => {
                    // The startup message has no type byte.
                    let mut started = false;
                    let mut since_sync = 0usize;
                    Box::new(move |message: &[u8]| {
                        if !std::mem::replace(&mut started, true) {
                            return;
                        }
                        match message[0] {
                            // A simple query is answered on its own.
                            b'Q' => since_sync = 0,
                            b'S' => {
                                // A Sync with nothing before it asks only
                                // whether the connection lives: the pool's
                                // ping.
                                if since_sync == 0 {
                                    counts.pings.fetch_add(1, Ordering::SeqCst);
                                }
                                since_sync = 0;
                            }
                            _ => since_sync += 1,
                        }
                    })
                }
                Side::Server => Box::new(move |message: &[u8]| {
                    if message[0] == b'Z' {
                        counts.ready.fetch_add(1, Ordering::SeqCst);
                    }
                }),
            }
        })
        .await;
        let url = format!("{scheme_user}@127.0.0.1:{}/{path}", proxy.port);
        CountingProxy {
            counts,
            url,
            _proxy: proxy,
        }
    }

    fn count(&self) -> (u64, u64) {
        (
            self.counts.ready.load(Ordering::SeqCst),
            self.counts.pings.load(Ordering::SeqCst),
        )
    }

    /// A pool through the proxy, made as a service makes its own.
    async fn pool(&self) -> PgPool {
        saga_shared::database::connect_with_backoff(&self.url, 1, &CancellationToken::new())
            .await
            .unwrap()
    }
}

/// `handler` as it was before its one-statement paths: only `handle`,
/// `decide` and a settlement's general form are seen by the runtime.
struct General<H>(H);

impl<H: Handler> Handler for General<H> {
    const KIND: WorkerKind = H::KIND;

    async fn handle(
        &self,
        conn: &mut PgConnection,
        command: &Envelope<Command>,
    ) -> Result<Outcome, sqlx::Error> {
        self.0.handle(conn, command).await
    }

    async fn decide(
        &self,
        conn: &mut PgConnection,
        command: &Envelope<Command>,
    ) -> Result<Decision, sqlx::Error> {
        Ok(match self.0.decide(conn, command).await? {
            Decision::Call(call) => Decision::Call(ExternalCall::new(async move {
                let settlement = call.run().await;
                Settlement::new(move |conn| Box::pin(settlement.settle(conn)))
            })),
            answer => answer,
        })
    }
}

/// Round trips `handler` makes for `command`, through `proxy`'s pool.
async fn round_trips<H: Handler>(
    proxy: &CountingProxy,
    pool: &PgPool,
    handler: &H,
    command: &Envelope<Command>,
) -> Trips {
    let (ready, pings) = proxy.count();
    handle_command(handler, pool, command).await.unwrap();
    // A connection goes back to the pool (and is pinged) after the command,
    // in a task of the pool's: count once every connection is idle again.
    saga_testkit::eventually(
        "every connection back in the pool",
        std::time::Duration::from_secs(10),
        || async { (pool.num_idle() == pool.size() as usize).then_some(()) },
    )
    .await;
    let (ready_after, pings_after) = proxy.count();
    Trips {
        statements: (ready_after - ready) - (pings_after - pings),
        pings: pings_after - pings,
    }
}

fn reserve_one(sku: &str) -> Envelope<Command> {
    Envelope::command(Uuid::new_v4(), 1, reserve_of(&[(sku, 1)]))
}

fn charge(saga_id: Uuid) -> Envelope<Command> {
    Envelope::command(saga_id, 1, charge_of(1250, "sim_approve"))
}

/// Each handler runs a first command (the connection's statements are
/// prepared, the prices read), then the measured one, as in a running
/// worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_reserve_is_one_statement() {
    let db = migrated("inventory_round_trips", &inventory::MIGRATOR).await;
    // What this process remembers of prices is shared by its tests: these
    // SKUs are this test's alone.
    let (general_sku, warm_sku, measured_sku) = (
        format!("RT-{}", Uuid::new_v4().simple()),
        format!("RT-{}", Uuid::new_v4().simple()),
        format!("RT-{}", Uuid::new_v4().simple()),
    );
    let rows: String = [&general_sku, &warm_sku, &measured_sku]
        .iter()
        .map(|sku| format!("{sku},Mug,100,850,USD,general\n"))
        .collect();
    catalogue::import(
        &db.pool,
        "catalogue.csv",
        format!("sku,name,on_hand,unit_price_cents,currency,tax_category\n{rows}").as_bytes(),
    )
    .await
    .unwrap();
    let proxy = CountingProxy::start(&db).await;
    let pool = proxy.pool().await;

    let general = General(Inventory);
    round_trips(&proxy, &pool, &general, &reserve_one(&general_sku)).await;
    let before = round_trips(&proxy, &pool, &general, &reserve_one(&general_sku)).await;
    // Prepares the statements on the connection, as a running worker has.
    round_trips(&proxy, &pool, &Inventory, &reserve_one(&warm_sku)).await;
    let cold = round_trips(&proxy, &pool, &Inventory, &reserve_one(&measured_sku)).await;
    let after = round_trips(&proxy, &pool, &Inventory, &reserve_one(&measured_sku)).await;
    println!(
        "inventory reserve, round trips: {before:?} before, {after:?} after, \
         {cold:?} with prices not yet read"
    );
    assert_eq!(after.statements, 1, "{after:?}");
    assert_eq!(after.pings, before.pings, "one checkout from the pool");
    assert_eq!(cold.statements, 2, "a price read more: {cold:?}");
    assert_eq!(before.statements, 6, "{before:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_charge_is_one_statement_each_side_of_the_provider_call() {
    let db = migrated("payment_round_trips", &payment::MIGRATOR).await;
    let proxy = CountingProxy::start(&db).await;
    let pool = proxy.pool().await;
    // The provider is another party: its books are not on the proxy.
    let general = General(Payment::with_config(
        Simulator::new(db.pool.clone()),
        PaymentConfig::simulated(),
    ));
    round_trips(&proxy, &pool, &general, &charge(Uuid::new_v4())).await;
    let before = round_trips(&proxy, &pool, &general, &charge(Uuid::new_v4())).await;
    let payment = Payment::with_config(Simulator::new(db.pool.clone()), PaymentConfig::simulated());
    round_trips(&proxy, &pool, &payment, &charge(Uuid::new_v4())).await;
    let after = round_trips(&proxy, &pool, &payment, &charge(Uuid::new_v4())).await;
    println!("payment charge, round trips: {before:?} before, {after:?} after");
    assert_eq!(after.statements, 2, "one statement per phase: {after:?}");
    assert_eq!(before.statements, 9, "{before:?}");
}
