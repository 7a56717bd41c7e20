//! The payment binary's own settings and its `ledger` subcommand, as an
//! operator meets them.

use std::process::{Command, Output};

use saga_protocol::values::Cents;
use uuid::Uuid;
use workers::payment::provider::ChargeRequest;
use workers::payment::{IdempotencyKey, PaymentProvider, Simulator, MIGRATOR};

use crate::migrated;

const PAYMENT: &str = env!("CARGO_BIN_EXE_payment");

fn payment(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(PAYMENT);
    command.args(args).env_clear().envs(env.iter().copied());
    command.output().expect("run the payment binary")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_bad_maximum_or_failpoint_stops_the_worker_naming_the_variable() {
    let service = [
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none"),
        ("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
    ];
    // A release build has no failpoints: it must not start as if it had.
    let without_failpoints =
        cfg!(not(feature = "failpoints")).then_some(("PAYMENT_FAILPOINT", "after_provider_charge"));
    let bad = [
        ("PAYMENT_MAX_AMOUNT_CENTS", "0"),
        ("PAYMENT_MAX_AMOUNT_CENTS", "a lot"),
        ("PAYMENT_MAX_AMOUNT_CENTS", "99999999999999999999"),
        ("PAYMENT_FAILPOINT", "sometimes"),
        ("PAYMENT_PROVIDER", "stripe"),
    ];
    for (name, value) in bad.into_iter().chain(without_failpoints) {
        let mut env = service.to_vec();
        env.push((name, value));
        let output = payment(&[], &env);
        assert_eq!(output.status.code(), Some(2), "{name}={value}: {output:?}");
        let error = stderr(&output);
        assert_eq!(error.lines().count(), 1, "one line: {error}");
        assert!(error.contains(name), "{error}");
    }
}

#[test]
fn help_names_the_maximum_and_the_ledger() {
    let help = String::from_utf8(payment(&["--help"], &[]).stdout).unwrap();
    assert!(help.contains("PAYMENT_MAX_AMOUNT_CENTS"), "{help}");
    assert!(help.contains("ledger"), "{help}");
}

#[tokio::test]
async fn ledger_prints_the_providers_side_as_csv() {
    let db = migrated("payment_ledger", &MIGRATOR).await;
    let empty = payment(&["ledger"], &[("DATABASE_URL", &db.url)]);
    assert!(empty.status.success(), "{empty:?}");
    assert_eq!(
        String::from_utf8(empty.stdout).unwrap(),
        "saga_id,charges,charged_cents,refunds,refunded_cents\n"
    );

    let saga = Uuid::new_v4();
    let provider = Simulator::new(db.pool.clone());
    let request = ChargeRequest {
        key: IdempotencyKey::charge(saga),
        saga_id: saga,
        amount_cents: Cents::new(2_145),
        currency: "USD".parse().unwrap(),
        payment_method: "sim_approve".into(),
        customer_id: "customer-1".parse().unwrap(),
        transient_failures: 0,
    };
    provider.charge(&request).await;
    provider.charge(&request).await;

    let output = payment(&["ledger"], &[("DATABASE_URL", &db.url)]);
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("saga_id,charges,charged_cents,refunds,refunded_cents\n{saga},1,2145,0,0\n")
    );
}
