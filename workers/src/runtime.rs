//! The worker runtime: consume a worker kind's queue, run each command's
//! handler in one transaction with the inbox (or, for a call to another
//! party, in two around that call), publish the reply with a confirm, then
//! ack. A handler may write its common case as one statement that is the
//! whole transaction (see [`Handler::at_once`]); the runtime tries it
//! first and falls back to the general path when it does not apply.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use saga_shared::broker::{header, Broker, BrokerError, Outgoing};
use saga_shared::consumer::{
    dead_letter, hold_until_settled, run_batch_consumer_until_stopped, Settled,
};
use saga_shared::messages::{reason, Command, Outcome};
use saga_shared::topology::REPLY_ROUTING_KEY;
use saga_shared::{traceparent, Envelope, WorkerKind};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::inbox;
use crate::WorkerError;

/// A worker's business rules. `handle` runs inside the transaction that also
/// records the inbox row, so its effect and the reply commit together. An
/// `Err` means infrastructure failed: nothing commits and the command is
/// tried again.
///
/// A worker whose effect happens at another party (the payment provider)
/// cannot put that effect in our transaction, so it overrides [`decide`]
/// instead: its first phase commits an intent with the inbox claim, the
/// runtime makes the external call holding no connection, and a second
/// transaction records the outcome and the reply.
///
/// [`decide`]: Handler::decide
pub trait Handler: Send + Sync + 'static {
    const KIND: WorkerKind;

    /// True for a handler that changes nothing: its answer comes from
    /// reads alone, so no effect has to commit with the inbox claim. The
    /// runtime then reads outside any transaction and records the claim
    /// with its reply in one statement (a duplicate is answered with the
    /// reply recorded first), which saves the transaction and two of its
    /// statements per command.
    const READS_ONLY: bool = false;

    fn handle<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        command: &'a Envelope<Command>,
    ) -> impl Future<Output = Result<Outcome, sqlx::Error>> + Send + 'a;

    /// The common case of a command as one statement: inbox claim, effect
    /// (or, for an external call, its committed intent) and recorded reply,
    /// all or nothing. Outside a transaction that statement is the whole
    /// transaction, so the command costs one round trip instead of a
    /// `BEGIN`, a claim, the handler's statements, a record and a `COMMIT`.
    ///
    /// `None`: the case did not apply (a duplicate, an existing row, not
    /// enough stock, the outage switch...) and the statement wrote nothing
    /// but, at most, a bare inbox claim (no reply, no effect), which the
    /// general path takes over as it takes over the claim of a call cut
    /// short. The runtime then runs the general path on the same
    /// connection. A unique violation means it lost a race to a concurrent
    /// command; outside a transaction nothing of it committed and the
    /// general path runs too.
    fn at_once<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        command: &'a Envelope<Command>,
    ) -> impl Future<Output = Result<Option<AtOnce>, sqlx::Error>> + Send + 'a {
        let _ = (conn, command);
        async { Ok(None) }
    }

    /// The first phase, in the inbox transaction. One-phase workers answer
    /// at once through [`Handler::handle`].
    fn decide<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        command: &'a Envelope<Command>,
    ) -> impl Future<Output = Result<Decision, sqlx::Error>> + Send + 'a {
        async move { self.handle(conn, command).await.map(Decision::Answer) }
    }
}

/// What the first phase of a command concluded.
pub enum Decision {
    /// The answer, to record and send now.
    Answer(Outcome),
    /// Commit what the first phase wrote (an intent), then make this call
    /// with no transaction open and no connection held.
    Call(ExternalCall),
}

/// What a handler's one-statement path did.
pub enum AtOnce {
    /// The command is claimed, done and its reply recorded: the reply body.
    Replied(serde_json::Value),
    /// The command is claimed and its intent written: the call remains.
    Call(ExternalCall),
}

/// A call to another party: it owns what it needs (it outlives the first
/// transaction) and yields how to record its answer.
pub struct ExternalCall(BoxFuture<'static, Settlement>);

impl ExternalCall {
    pub fn new(call: impl Future<Output = Settlement> + Send + 'static) -> Self {
        ExternalCall(Box::pin(call))
    }

    /// Makes the call. Hold no connection while it runs.
    pub async fn run(self) -> Settlement {
        self.0.await
    }
}

/// Records an external call's answer in the second transaction and returns
/// the outcome to reply. It must be idempotent: a redelivered command may
/// have settled the same call meanwhile.
pub struct Settlement {
    settle: Box<Settle>,
    at_once: Option<Box<SettleAtOnce>>,
}

/// The boxed form of a settlement: records in the connection's transaction.
type Settle =
    dyn for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Outcome, sqlx::Error>> + Send;

/// The boxed form of a one-statement settlement: see
/// [`Settlement::with_one_statement`].
type SettleAtOnce = dyn for<'c> FnOnce(
        &'c mut PgConnection,
        &'c Envelope<Command>,
    ) -> BoxFuture<'c, Result<Option<serde_json::Value>, sqlx::Error>>
    + Send;

impl Settlement {
    pub fn new(
        settle: impl for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Outcome, sqlx::Error>>
            + Send
            + 'static,
    ) -> Self {
        Settlement {
            settle: Box::new(settle),
            at_once: None,
        }
    }

    /// Adds the common case as one statement: it takes the command's inbox
    /// row lock first (as the general path does), records the answer and
    /// the reply, all or nothing, and returns the reply body; `None` when
    /// it did not apply and wrote nothing. The general settlement then
    /// runs as before.
    pub fn with_one_statement(
        mut self,
        at_once: impl for<'c> FnOnce(
                &'c mut PgConnection,
                &'c Envelope<Command>,
            )
                -> BoxFuture<'c, Result<Option<serde_json::Value>, sqlx::Error>>
            + Send
            + 'static,
    ) -> Self {
        self.at_once = Some(Box::new(at_once));
        self
    }

    /// Records the answer in `conn`'s transaction; the outcome to reply.
    pub async fn settle(self, conn: &mut PgConnection) -> Result<Outcome, sqlx::Error> {
        (self.settle)(conn).await
    }
}

/// A handler's answer to a command of another worker kind. The runtime
/// dead-letters those before any handler sees them; a handler's catch-all
/// arm refuses with this rather than leave the command to be retried.
pub fn not_handled(kind: WorkerKind, command: &Command) -> Outcome {
    Outcome::rejected(
        reason::INVALID_COMMAND,
        format!(
            "the {} worker does not handle `{}`",
            kind.as_str(),
            command.step()
        ),
    )
}

struct Context<H> {
    handler: H,
    pool: PgPool,
    broker: Arc<Broker>,
}

/// Consumes until `stop`, then stops fetching, lets in-flight commands
/// finish, and returns. At most `prefetch` commands are handled at once;
/// commands that are already waiting when one arrives are handled together
/// in one transaction (see [`handle_batch`]).
pub async fn run_worker_until_stopped<H: Handler>(
    handler: H,
    pool: PgPool,
    broker: Arc<Broker>,
    prefetch: u16,
    stop: CancellationToken,
) -> Result<(), WorkerError> {
    let queue = broker.topology().command_queue(H::KIND);
    let tag = format!("{}-{}", H::KIND.as_str(), Uuid::new_v4().simple());
    let ctx = Arc::new(Context {
        handler,
        pool,
        broker: broker.clone(),
    });
    let handle = |deliveries| {
        let (ctx, stop) = (ctx.clone(), stop.clone());
        async move { process(&ctx, deliveries, &stop).await }
    };
    run_batch_consumer_until_stopped(&broker, &queue, &tag, prefetch, &stop, handle).await?;
    Ok(())
}

/// A decoded command and the delivery that brought it.
struct Received {
    delivery: Delivery,
    command: Envelope<Command>,
    span: tracing::Span,
}

/// The command of `delivery`, or why it can never be handled here.
fn receive<H: Handler>(delivery: &Delivery) -> Result<Envelope<Command>, String> {
    match Envelope::<Command>::decode(&delivery.data) {
        Ok(command) if command.step.worker() == H::KIND => Ok(command),
        Ok(command) => Err(format!(
            "command `{}` is not for the {} worker",
            command.step,
            H::KIND.as_str()
        )),
        Err(error) => Err(error.to_string()),
    }
}

fn command_span<H: Handler>(delivery: &Delivery, command: &Envelope<Command>) -> tracing::Span {
    let span = tracing::info_span!(
        "command",
        saga_id = %command.saga_id,
        step = %command.step,
        attempt = command.attempt,
        worker = H::KIND.as_str(),
    );
    // A child of the relay's publish, whose context the message carries.
    traceparent::continue_from(&span, header(delivery, traceparent::HEADER).as_deref());
    span
}

async fn process<H: Handler>(
    ctx: &Context<H>,
    deliveries: Vec<Delivery>,
    stop: &CancellationToken,
) {
    let mut received = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        match receive::<H>(&delivery) {
            Ok(command) => received.push(Received {
                span: command_span::<H>(&delivery, &command),
                delivery,
                command,
            }),
            Err(reason) => dead_letter(&ctx.broker, &delivery, &reason).await,
        }
    }
    if received.len() <= 1 {
        // Alone, a command needs no savepoint: the plain path is shortest.
        for one in received {
            answer(ctx, &one.delivery, &one.command, stop)
                .instrument(one.span)
                .await;
        }
        return;
    }
    let commands: Vec<&Envelope<Command>> = received.iter().map(|r| &r.command).collect();
    // Boxed here, where its lifetimes are concrete, so the spawned batch
    // future is provably `Send`.
    let handled = match handle_batch(&ctx.handler, &ctx.pool, &commands)
        .boxed()
        .await
    {
        Ok(handled) => handled,
        Err(error) => {
            // Nothing of the batch committed (or, if the commit's answer was
            // lost, the inbox answers what did): each goes on alone.
            tracing::warn!(%error, commands = received.len(), "batch failed; handling each alone");
            let mut alone = Vec::with_capacity(received.len());
            for one in &received {
                alone.push(
                    answer(ctx, &one.delivery, &one.command, stop)
                        .instrument(one.span.clone())
                        .boxed(),
                );
            }
            futures::future::join_all(alone).await;
            return;
        }
    };
    let (mut replied, mut outgoing) = (Vec::new(), Vec::new());
    let mut later = Vec::new();
    for (one, handled) in received.iter().zip(handled) {
        match handled {
            Batched::Reply(reply) => {
                outgoing.push(reply_message(
                    ctx,
                    &one.delivery,
                    &one.command,
                    &reply,
                    &one.span,
                ));
                replied.push(one);
            }
            Batched::Call(call) => later.push((one, Some(call))),
            Batched::Alone(error) => {
                tracing::info!(parent: &one.span, %error, "command failed in its batch; handling it alone");
                later.push((one, None));
            }
            Batched::NotTried => later.push((one, None)),
            Batched::Panicked => {
                tracing::error!(parent: &one.span, "handler panicked; command requeued");
                requeue(&one.delivery).await;
            }
        }
    }
    // Every reply is sent before any confirm is awaited: one wait for all.
    // The external calls start meanwhile.
    let replies = async {
        if outgoing.is_empty() {
            return;
        }
        let confirmed = ctx.broker.publish_all(&outgoing, CONFIRM_WITHIN).await;
        for (one, confirmed) in replied.iter().zip(confirmed) {
            settle_delivery(&one.delivery, confirmed).await;
        }
    };
    let mut rest = Vec::with_capacity(later.len());
    for (one, call) in later {
        let span = one.span.clone();
        rest.push(match call {
            Some(call) => finish_call(ctx, one, call, stop).instrument(span).boxed(),
            None => answer(ctx, &one.delivery, &one.command, stop)
                .instrument(span)
                .boxed(),
        });
    }
    futures::future::join(replies, futures::future::join_all(rest)).await;
}

/// How long a batch's replies may wait for their confirms; an unconfirmed
/// reply's command is requeued and answered again from the inbox.
const CONFIRM_WITHIN: Duration = Duration::from_secs(30);

/// Opens a batch: the first command's savepoint, and how long a command in
/// a batch waits for a row lock before it leaves the batch and is handled
/// alone. Two batches may take the same rows in opposite orders (each
/// command keeps its own rows in order, a batch cannot); the bound turns
/// that deadlock into a short wait and a retry alone, where lock order
/// holds.
const BATCH_START: &str = "SET LOCAL lock_timeout = '50ms'; SAVEPOINT command";

/// Acks a command whose reply the broker confirmed; requeues it otherwise
/// (its redelivery is answered from the inbox).
async fn settle_delivery(delivery: &Delivery, confirmed: Result<(), BrokerError>) {
    match confirmed {
        Ok(()) => {
            // One ack per delivery: a `multiple` ack would also ack what
            // other batches on this channel are still handling.
            if !matches!(delivery.ack(BasicAckOptions::default()).await, Ok(true)) {
                tracing::warn!(
                    "ack not sent; the command will be redelivered and answered from the inbox"
                );
            }
        }
        Err(error) => {
            tracing::error!(%error, "reply not confirmed; requeueing the command");
            requeue(delivery).await;
        }
    }
}

async fn requeue(delivery: &Delivery) {
    let _ = delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await;
}

/// The second phase of a command whose first phase committed with its
/// batch. A failure here runs the whole command again alone: the first
/// phase then finds its intent and resumes it.
async fn finish_call<H: Handler>(
    ctx: &Context<H>,
    one: &Received,
    call: ExternalCall,
    stop: &CancellationToken,
) {
    let settled = async {
        let settlement = call.run().await;
        record_settlement(&ctx.pool, &one.command, settlement).await
    }
    .await;
    match settled {
        Ok(reply) => {
            let outgoing = reply_message(ctx, &one.delivery, &one.command, &reply, &one.span);
            let confirmed = ctx.broker.publish(&outgoing).await;
            settle_delivery(&one.delivery, confirmed).await;
        }
        Err(error) => {
            tracing::warn!(%error, "settling after the external call failed; handling it again");
            answer(ctx, &one.delivery, &one.command, stop).await;
        }
    }
}

async fn answer<H: Handler>(
    ctx: &Context<H>,
    delivery: &Delivery,
    command: &Envelope<Command>,
    stop: &CancellationToken,
) {
    let reply = match hold_until_settled(delivery, stop, || handle_once(ctx, command)).await {
        Settled::Done(reply) => reply,
        Settled::Permanent(reason) => return dead_letter(&ctx.broker, delivery, &reason).await,
        Settled::Stopped => return,
    };
    let outgoing = reply_message(ctx, delivery, command, &reply, &tracing::Span::current());
    let confirmed = ctx.broker.publish(&outgoing).await;
    settle_delivery(delivery, confirmed).await;
}

/// The reply message for a recorded reply body.
fn reply_message<H: Handler>(
    ctx: &Context<H>,
    delivery: &Delivery,
    command: &Envelope<Command>,
    reply: &serde_json::Value,
    span: &tracing::Span,
) -> Outgoing {
    let message_id = reply
        .get("message_id")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(Uuid::now_v7);
    Outgoing {
        exchange: ctx.broker.topology().reply_exchange(),
        routing_key: REPLY_ROUTING_KEY.to_owned(),
        body: serde_json::to_vec(reply).expect("JSON value serializes"),
        message_id,
        saga_id: command.saga_id,
        message_type: command.step.reply_type(),
        // The orchestrator's handling of the reply becomes a child of this
        // command's span; without an exporter the command's own value
        // travels on.
        traceparent: traceparent::of(span)
            .or_else(|| header(delivery, traceparent::HEADER))
            .unwrap_or_else(|| traceparent::for_saga(command.saga_id)),
    }
}

/// What became of one command of a batch.
pub enum Batched {
    /// Its reply, committed with the batch (recorded before, for a
    /// duplicate).
    Reply(serde_json::Value),
    /// Its first phase committed with the batch; the external call and the
    /// second phase remain.
    Call(ExternalCall),
    /// It failed; nothing of it committed. It is to be handled alone, where
    /// a transient failure is held and retried and a permanent one
    /// dead-letters it.
    Alone(sqlx::Error),
    /// Its handler panicked; nothing of it committed.
    Panicked,
    /// Not tried in the batch (an earlier command found its rows held by
    /// another transaction): to be handled alone.
    NotTried,
}

/// Handles `commands` in one transaction with one commit. Each runs inside
/// a savepoint: one that fails is rolled back to it, alone, and the others
/// still commit. `Err` means the transaction itself failed (nothing of it
/// committed, unless only the commit's answer was lost): each command is
/// then to be handled alone.
pub async fn handle_batch<H: Handler>(
    handler: &H,
    pool: &PgPool,
    commands: &[&Envelope<Command>],
) -> Result<Vec<Batched>, sqlx::Error> {
    if H::READS_ONLY {
        return answer_reading(handler, pool, commands).await;
    }
    let mut tx = pool.begin().await?;
    // One round trip sets the lock bound and the first savepoint; each
    // command's success moves the savepoint past it in one more.
    simple(&mut tx, BATCH_START).await?;
    let mut handled = Vec::with_capacity(commands.len());
    let mut contended = false;
    for (n, command) in commands.iter().enumerate() {
        if contended {
            handled.push(Batched::NotTried);
            continue;
        }
        let step = AssertUnwindSafe(first_phase(handler, &mut tx, command).boxed())
            .catch_unwind()
            .await;
        match step {
            Ok(Ok(done)) => {
                // The last command's savepoint is released by the commit:
                // no round trip for a savepoint nothing would use.
                if n + 1 < commands.len() {
                    simple(&mut tx, "RELEASE SAVEPOINT command; SAVEPOINT command").await?;
                }
                handled.push(done);
            }
            Ok(Err(error)) => {
                simple(&mut tx, "ROLLBACK TO SAVEPOINT command").await?;
                // Another transaction holds a row this one wants: the
                // commands after it (often after the same hot stock row)
                // would each wait the whole bound too. They go alone, where
                // they queue for the row once.
                contended = is_lock_timeout(&error);
                handled.push(Batched::Alone(error));
            }
            Err(_) => {
                simple(&mut tx, "ROLLBACK TO SAVEPOINT command").await?;
                handled.push(Batched::Panicked);
            }
        }
    }
    tx.commit().await?;
    Ok(handled)
}

/// A batch for a handler that changes nothing: each command's reads on one
/// connection, outside any transaction, then every claim with its reply in
/// one statement. A command whose reads fail, or whose handler panics, is
/// not claimed; it goes alone as in any batch.
async fn answer_reading<H: Handler>(
    handler: &H,
    pool: &PgPool,
    commands: &[&Envelope<Command>],
) -> Result<Vec<Batched>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut handled = Vec::with_capacity(commands.len());
    let mut answered = Vec::with_capacity(commands.len());
    for command in commands {
        let step = AssertUnwindSafe(handler.handle(&mut conn, command).boxed())
            .catch_unwind()
            .await;
        match step {
            Ok(Ok(outcome)) => {
                tracing::info!(message_id = %command.message_id, outcome = outcome.label(), "command handled");
                answered.push((*command, command.reply(outcome)));
                // Its reply once recorded, below.
                handled.push(None);
            }
            Ok(Err(error)) => handled.push(Some(Batched::Alone(error))),
            Err(_) => handled.push(Some(Batched::Panicked)),
        }
    }
    let mut replies = if answered.is_empty() {
        Vec::new()
    } else {
        inbox::claim_answered(&mut conn, &answered).await?
    }
    .into_iter();
    Ok(handled
        .into_iter()
        .map(|done| {
            done.unwrap_or_else(|| Batched::Reply(replies.next().expect("a reply per answer")))
        })
        .collect())
}

/// SQLSTATE 55P03: a lock not granted within `lock_timeout`.
fn is_lock_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("55P03"))
}

/// Runs `sql` (statements without parameters) in one round trip.
fn simple<'c>(
    conn: &'c mut PgConnection,
    sql: &'static str,
) -> BoxFuture<'c, Result<(), sqlx::Error>> {
    // A query without arguments goes over the simple protocol, which
    // takes several statements at once.
    Box::pin(async move {
        sqlx::Executor::execute(conn, sql).await?;
        Ok(())
    })
}

/// Inbox claim, the handler's decision, and for an answer its recorded
/// reply, in the caller's transaction.
async fn first_phase<H: Handler>(
    handler: &H,
    conn: &mut PgConnection,
    command: &Envelope<Command>,
) -> Result<Batched, sqlx::Error> {
    // In the batch's transaction an error of the statement (a lost race
    // included) fails the command's savepoint: it goes alone, where the
    // race is seen as settled.
    match handler.at_once(conn, command).await? {
        Some(AtOnce::Replied(reply)) => {
            tracing::info!(message_id = %command.message_id, "command handled in one statement");
            return Ok(Batched::Reply(reply));
        }
        Some(AtOnce::Call(call)) => return Ok(Batched::Call(call)),
        None => {}
    }
    if let Some(reply) = inbox::claim(conn, command).await? {
        tracing::info!(message_id = %command.message_id, "duplicate command: sending the recorded reply");
        return Ok(Batched::Reply(reply));
    }
    match handler.decide(conn, command).await? {
        Decision::Answer(outcome) => {
            tracing::info!(message_id = %command.message_id, outcome = outcome.label(), "command handled");
            let body = inbox::record(conn, command, &command.reply(outcome)).await?;
            Ok(Batched::Reply(body))
        }
        Decision::Call(call) => Ok(Batched::Call(call)),
    }
}

async fn handle_once<H: Handler>(
    ctx: &Context<H>,
    command: &Envelope<Command>,
) -> Result<serde_json::Value, sqlx::Error> {
    handle_command(&ctx.handler, &ctx.pool, command).await
}

/// Inbox claim, effect, recorded reply: one transaction for a one-phase
/// handler; for an external call, the claim and the intent commit first,
/// the call runs with no connection held, and a second transaction records
/// its outcome and the reply. Returns the reply body to publish (the
/// recorded one for a duplicate).
#[tracing::instrument(skip_all, fields(message_id = %command.message_id))]
pub async fn handle_command<H: Handler>(
    handler: &H,
    pool: &PgPool,
    command: &Envelope<Command>,
) -> Result<serde_json::Value, sqlx::Error> {
    if H::READS_ONLY {
        let mut conn = pool.acquire().await?;
        let outcome = handler.handle(&mut conn, command).await?;
        tracing::info!(outcome = outcome.label(), "command handled");
        let answered = [(command, command.reply(outcome))];
        let mut replies = inbox::claim_answered(&mut conn, &answered).await?;
        return Ok(replies.pop().expect("a reply per answer"));
    }
    let mut conn = pool.acquire().await?;
    match at_once(handler, &mut conn, command).await? {
        Some(AtOnce::Replied(reply)) => {
            tracing::info!("command handled in one statement");
            return Ok(reply);
        }
        Some(AtOnce::Call(call)) => {
            drop(conn);
            return record_settlement(pool, command, call.run().await).await;
        }
        None => {}
    }
    // The same connection: no second checkout from the pool.
    let mut tx = conn.begin().await?;
    if let Some(reply) = inbox::claim(&mut tx, command).await? {
        tx.commit().await?;
        tracing::info!("duplicate command: sending the recorded reply");
        return Ok(reply);
    }
    let call = match handler.decide(&mut tx, command).await? {
        Decision::Answer(outcome) => {
            tracing::info!(outcome = outcome.label(), "command handled");
            let body = inbox::record(&mut tx, command, &command.reply(outcome)).await?;
            tx.commit().await?;
            return Ok(body);
        }
        Decision::Call(call) => call,
    };
    // The claim stays without a reply: a redelivery runs the first phase
    // again, finds the intent, and the handler asks the other party what
    // became of it.
    tx.commit().await?;
    // No connection is held during the call.
    drop(conn);
    record_settlement(pool, command, call.run().await).await
}

/// The handler's one-statement path, outside any transaction. A unique
/// violation is a race lost to a concurrent command of the same saga or
/// message: the statement committed nothing, and the general path, which
/// waits for that command, answers.
async fn at_once<H: Handler>(
    handler: &H,
    conn: &mut PgConnection,
    command: &Envelope<Command>,
) -> Result<Option<AtOnce>, sqlx::Error> {
    match handler.at_once(conn, command).await {
        Err(error) if is_unique_violation(&error) => {
            tracing::info!(%error, "one-statement path lost a race; taking the general path");
            Ok(None)
        }
        done => done,
    }
}

/// SQLSTATE 23505.
fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("23505"))
}

/// The second phase: records an external call's answer and the reply, in
/// one statement when the settlement has one that applies, else in a
/// transaction that takes the inbox row's lock first. The reply body.
async fn record_settlement(
    pool: &PgPool,
    command: &Envelope<Command>,
    settlement: Settlement,
) -> Result<serde_json::Value, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let Settlement { settle, at_once } = settlement;
    if let Some(at_once) = at_once {
        if let Some(body) = at_once(&mut conn, command).await? {
            tracing::info!("command handled after an external call, in one statement");
            return Ok(body);
        }
    }
    let mut tx = conn.begin().await?;
    inbox::lock(&mut tx, command).await?;
    let outcome = settle(&mut tx).await?;
    tracing::info!(
        outcome = outcome.label(),
        "command handled after an external call"
    );
    let body = inbox::record(&mut tx, command, &command.reply(outcome)).await?;
    tx.commit().await?;
    Ok(body)
}
