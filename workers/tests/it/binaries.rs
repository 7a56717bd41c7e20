//! The three binaries as an operator runs them: help, exit codes, one-line
//! errors, and the one-shot subcommands against a real database.

use std::io::Write;
use std::process::{Command, Output};

use workers::inventory;
use workers::payment;

use saga_testkit as testing;

use crate::migrated;

const INVENTORY: &str = env!("CARGO_BIN_EXE_inventory");
const TAX: &str = env!("CARGO_BIN_EXE_tax");
const PAYMENT: &str = env!("CARGO_BIN_EXE_payment");

/// Runs a binary with a clean environment but for `env`.
fn run(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary);
    command.args(args).env_clear().envs(env.iter().copied());
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    command.output().expect("run the binary")
}

/// Asserts `output` is the operator's to fix: exit code 2 and one line of
/// error that says `what`.
fn assert_refused_in_one_line(output: &Output, what: &str, context: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{context}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{context}: {stderr}");
    assert!(stderr.contains(what), "{context}: {stderr}");
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn temp_csv(contents: &str) -> tempfile_path::TempCsv {
    tempfile_path::TempCsv::new(contents)
}

/// A CSV file under the system temp directory, removed on drop.
mod tempfile_path {
    use super::*;

    pub struct TempCsv {
        pub path: std::path::PathBuf,
    }

    impl TempCsv {
        pub fn new(contents: &str) -> TempCsv {
            let path =
                std::env::temp_dir().join(format!("workers-it-{}.csv", uuid::Uuid::new_v4()));
            let mut file = std::fs::File::create(&path).expect("create a temp file");
            file.write_all(contents.as_bytes())
                .expect("write the temp file");
            TempCsv { path }
        }

        pub fn arg(&self) -> &str {
            self.path.to_str().expect("a UTF-8 temp path")
        }
    }

    impl Drop for TempCsv {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[test]
fn every_binary_and_subcommand_has_help() {
    for (binary, subcommands) in [
        (INVENTORY, &["serve", "migrate", "import", "export"][..]),
        (TAX, &["serve", "migrate", "import"][..]),
        (PAYMENT, &["serve", "migrate", "outage"][..]),
    ] {
        let output = run(binary, &["--help"], &[]);
        assert!(output.status.success(), "{binary} --help");
        let help = text(&output.stdout);
        assert!(help.contains("checkout saga"), "{help}");
        for subcommand in subcommands {
            assert!(
                help.contains(subcommand),
                "{binary} help lists {subcommand}: {help}"
            );
            let output = run(binary, &[subcommand, "--help"], &[]);
            assert!(output.status.success(), "{binary} {subcommand} --help");
            assert!(
                text(&output.stdout).contains("Usage"),
                "{binary} {subcommand} --help"
            );
        }
    }
}

#[test]
fn a_missing_database_url_is_one_line_and_exit_code_2() {
    for (binary, args) in [
        (INVENTORY, &["import", "catalogue.csv"][..]),
        (INVENTORY, &[][..]),
        (TAX, &["import", "rates.csv"][..]),
        (PAYMENT, &["outage"][..]),
        (PAYMENT, &["migrate"][..]),
    ] {
        let output = run(binary, args, &[]);
        assert_refused_in_one_line(&output, "DATABASE_URL", &format!("{binary} {args:?}"));
    }
}

#[tokio::test]
async fn inventory_import_and_export_through_the_binary() {
    let db = migrated("inventory_bin", &inventory::MIGRATOR).await;
    let env = [("DATABASE_URL", db.url.as_str())];

    let bad = temp_csv(
        "sku,name,on_hand,unit_price_cents,currency,tax_category\nMUG,Mug,5,850,USD,general\nBOWL,Bowl,lots,400,USD,kitchen\n",
    );
    let output = run(INVENTORY, &["import", bad.arg()], &env);
    assert_refused_in_one_line(&output, "line 3, on_hand: `lots`", "bad row");

    let output = run(INVENTORY, &["export"], &env);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).lines().count(), 1, "nothing imported");

    let good = temp_csv(
        "sku,name,on_hand,unit_price_cents,currency,tax_category\nMUG,Mug,5,850,USD,general\nBOWL,Bowl,2,400,USD,kitchen\n",
    );
    let output = run(INVENTORY, &["import", good.arg()], &env);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "imported 2 products (2 new, 0 updated)\n"
    );

    let output = run(INVENTORY, &["export"], &env);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "sku,name,on_hand,available,unit_price_cents,currency,tax_category\n\
         BOWL,Bowl,2,2,400,USD,kitchen\n\
         MUG,Mug,5,5,850,USD,general\n"
    );

    let output = run(INVENTORY, &["import", "/nonexistent/catalogue.csv"], &env);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("cannot open"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn payment_outage_switch_through_the_binary() {
    let db = migrated("payment_bin", &payment::MIGRATOR).await;
    let env = [("DATABASE_URL", db.url.as_str())];

    let show = |args: &[&str]| {
        let output = run(PAYMENT, args, &env);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        text(&output.stdout)
    };

    assert_eq!(show(&["outage"]), "payment provider outage: off\n");
    assert_eq!(show(&["outage", "on"]), "payment provider outage: on\n");
    assert_eq!(show(&["outage"]), "payment provider outage: on\n");
    let mut conn = db.pool.acquire().await.unwrap();
    assert!(payment::outage::is_on(&mut conn).await.unwrap());
    assert_eq!(show(&["outage", "off"]), "payment provider outage: off\n");

    let output = run(PAYMENT, &["outage", "maybe"], &env);
    assert_eq!(output.status.code(), Some(2), "clap refuses a bad value");
}

#[tokio::test]
async fn migrate_through_the_binary_then_a_service_that_may_not_migrate() {
    let db = testing::TestDatabase::create("tax_migrate_bin").await;
    let env = [("DATABASE_URL", db.url.as_str())];
    let n = workers::tax::SCHEMA.build_version();

    let output = run(TAX, &["migrate"], &env);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len() as i64, n + 1, "{stdout}");
    assert_eq!(lines[0], "tax: applied 1 tax");
    assert_eq!(lines[n as usize], format!("tax: schema now at version {n}"));

    let output = run(TAX, &["migrate"], &env);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        text(&output.stdout),
        format!("tax: schema already at version {n}\n")
    );

    let output = run(
        TAX,
        &["migrate"],
        &[env[0], ("MIGRATE_STATEMENT_TIMEOUT", "15 minutes")],
    );
    assert_refused_in_one_line(&output, "MIGRATE_STATEMENT_TIMEOUT is invalid", "migrate");

    // Where only `migrate` migrates, a service (and an operator command)
    // on a schema behind its build refuses in one line.
    let empty = testing::TestDatabase::create("tax_check_bin").await;
    let rates = temp_csv("country,region,category,rate_bp\nUS,,general,500\n");
    for args in [&[][..], &["import", rates.arg()][..]] {
        let output = run(
            TAX,
            args,
            &[
                ("DATABASE_URL", empty.url.as_str()),
                ("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
                ("MIGRATE_ON_START", "false"),
            ],
        );
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!("error: tax: database schema is at version 0, this build needs {n}: run `tax migrate` first"),
            "{args:?}"
        );
    }
}
