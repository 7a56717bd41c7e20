//! Whether this build can run on a schema: the applied migrations are
//! this build's as it has them, it has every one the build knows, and the
//! schema's `schema_compat.min_reader_version` asks for no newer build.

use std::fmt::Write as _;

use sqlx::{PgConnection, PgPool};

use super::error::SchemaError;
use super::migrations::Schema;

/// One applied migration, as `_sqlx_migrations` has it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct Applied {
    pub(super) version: i64,
    pub(super) description: String,
    checksum: Vec<u8>,
    success: bool,
}

/// What the database says about its schema.
#[derive(Debug, Clone, Default)]
pub(super) struct State {
    pub(super) applied: Vec<Applied>,
    /// `schema_compat.min_reader_version`; `None` on a schema from before
    /// that table, which every build can read.
    min_reader_version: Option<i64>,
}

impl State {
    pub(super) async fn read(conn: &mut PgConnection) -> Result<State, sqlx::Error> {
        let (migrations, compat): (bool, bool) = sqlx::query_as(
            "SELECT to_regclass('_sqlx_migrations') IS NOT NULL,
                    to_regclass('schema_compat') IS NOT NULL",
        )
        .fetch_one(&mut *conn)
        .await?;
        let mut state = State::default();
        if migrations {
            state.applied = sqlx::query_as(
                "SELECT version, description, checksum, success
                 FROM _sqlx_migrations ORDER BY version",
            )
            .fetch_all(&mut *conn)
            .await?;
        }
        if compat {
            state.min_reader_version =
                sqlx::query_scalar("SELECT max(min_reader_version) FROM schema_compat")
                    .fetch_one(&mut *conn)
                    .await?;
        }
        Ok(state)
    }

    /// The newest migration applied, known to this build or not.
    pub(super) fn version(&self) -> i64 {
        self.applied
            .iter()
            .filter(|a| a.success)
            .map(|a| a.version)
            .max()
            .unwrap_or(0)
    }

    pub(super) fn has(&self, version: i64) -> bool {
        self.applied.iter().any(|a| a.version == version)
    }
}

/// The applied migrations are this build's as it has them: none stopped
/// part-way, none edited since.
pub(super) fn verify_applied(schema: &Schema, state: &State) -> Result<(), SchemaError> {
    if let Some(dirty) = state.applied.iter().find(|a| !a.success) {
        return Err(SchemaError::Dirty {
            service: schema.service,
            version: dirty.version,
        });
    }
    for applied in &state.applied {
        if let Some(known) = schema.known(applied.version) {
            if *known.checksum != *applied.checksum {
                return Err(SchemaError::Changed {
                    service: schema.service,
                    version: applied.version,
                    description: applied.description.clone(),
                });
            }
        }
    }
    Ok(())
}

/// This build can run on the schema: it has every migration the build
/// knows, and asks for no build newer than this one.
pub(super) fn verify_runnable(schema: &Schema, state: &State) -> Result<(), SchemaError> {
    let (at, knows) = (state.version(), schema.build_version());
    if let Some(requires) = state.min_reader_version.filter(|floor| *floor > knows) {
        return Err(SchemaError::TooNew {
            service: schema.service,
            at,
            requires,
            knows,
        });
    }
    match schema.migrations().find(|m| !state.has(m.version)) {
        None => Ok(()),
        Some(missing) if missing.version > at => Err(SchemaError::Behind {
            service: schema.service,
            at,
            needs: knows,
        }),
        Some(missing) => Err(SchemaError::Lacks {
            service: schema.service,
            at,
            missing: missing.version,
            description: missing.description.to_string(),
        }),
    }
}

/// Where a schema stands against this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub service: &'static str,
    /// The newest migration the database has.
    pub version: i64,
    /// The newest migration this build knows.
    pub build: i64,
    /// What this run applied (version, description), oldest first.
    pub applied: Vec<(i64, String)>,
}

impl Status {
    /// What `migrate` prints: each migration it applied, then where the
    /// schema is.
    pub fn report(&self) -> String {
        let service = self.service;
        let mut out = String::new();
        for (version, description) in &self.applied {
            let _ = writeln!(out, "{service}: applied {version} {description}");
        }
        let at = self.version;
        let _ = match self.applied.is_empty() {
            true => write!(out, "{service}: schema already at version {at}"),
            false => write!(out, "{service}: schema now at version {at}"),
        };
        if at > self.build {
            let _ = write!(
                out,
                " (this build knows {}; the newer migrations are a later release's, and the schema allows this build)",
                self.build
            );
        }
        out.push('\n');
        out
    }
}

/// Checks, without changing anything, that this build can run on the
/// schema of `pool`'s database.
pub async fn check(pool: &PgPool, schema: &Schema) -> Result<Status, SchemaError> {
    let database = |error| schema.database_error(error);
    let mut conn = pool.acquire().await.map_err(database)?;
    let state = State::read(&mut conn).await.map_err(database)?;
    verify_applied(schema, &state)?;
    verify_runnable(schema, &state)?;
    Ok(Status {
        service: schema.service,
        version: state.version(),
        build: schema.build_version(),
        applied: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use sqlx::migrate::{Migration, MigrationType, Migrator};

    use super::*;

    fn schema(versions: &[i64]) -> Schema {
        let migrations: Vec<Migration> = versions
            .iter()
            .map(|&v| {
                Migration::new(
                    v,
                    format!("step {v}").into(),
                    MigrationType::Simple,
                    format!("SELECT {v}").into(),
                    false,
                )
            })
            .collect();
        let migrator = Box::leak(Box::new(Migrator {
            migrations: migrations.into(),
            ..Migrator::DEFAULT
        }));
        Schema::new("svc", migrator)
    }

    fn state(schema: &Schema, versions: &[i64], floor: Option<i64>) -> State {
        State {
            applied: versions
                .iter()
                .map(|&version| Applied {
                    version,
                    description: format!("step {version}"),
                    checksum: schema
                        .known(version)
                        .map(|m| m.checksum.to_vec())
                        .unwrap_or_default(),
                    success: true,
                })
                .collect(),
            min_reader_version: floor,
        }
    }

    #[test]
    fn a_build_runs_on_its_schema_and_on_newer_ones_that_allow_it() {
        let s = schema(&[1, 2, 3]);
        assert!(verify_runnable(&s, &state(&s, &[1, 2, 3], None)).is_ok());
        assert!(verify_runnable(&s, &state(&s, &[1, 2, 3, 4, 5], Some(3))).is_ok());
        assert!(verify_runnable(&s, &state(&s, &[1, 2, 3, 4, 5], Some(1))).is_ok());
        assert_eq!(
            verify_runnable(&s, &state(&s, &[1, 2, 3, 4, 5], Some(5)))
                .unwrap_err()
                .to_string(),
            "svc: database schema is at version 5 and requires a build that knows version 5; this build knows 3"
        );
        assert_eq!(
            verify_runnable(&s, &state(&s, &[1, 2], None))
                .unwrap_err()
                .to_string(),
            "svc: database schema is at version 2, this build needs 3: run `svc migrate` first"
        );
        assert_eq!(
            verify_runnable(&s, &state(&s, &[], None))
                .unwrap_err()
                .to_string(),
            "svc: database schema is at version 0, this build needs 3: run `svc migrate` first"
        );
        assert!(verify_runnable(&s, &state(&s, &[1, 3], None))
            .unwrap_err()
            .to_string()
            .contains("lacks migration 2 (step 2)"));
    }

    #[test]
    fn an_edited_or_half_applied_migration_is_named() {
        let s = schema(&[1, 2]);
        let mut edited = state(&s, &[1, 2, 7], None);
        assert!(verify_applied(&s, &edited).is_ok(), "unknown 7 is not ours");
        edited.applied[1].checksum = vec![0];
        assert!(verify_applied(&s, &edited)
            .unwrap_err()
            .to_string()
            .starts_with("svc: migration 2 (step 2) was applied from other contents"));
        let mut dirty = state(&s, &[1, 2], None);
        dirty.applied[1].success = false;
        assert!(verify_applied(&s, &dirty)
            .unwrap_err()
            .to_string()
            .contains("migration 2 is marked failed"));
    }

    #[test]
    fn the_report_lists_what_was_applied() {
        let status = Status {
            service: "tax",
            version: 3,
            build: 3,
            applied: vec![(2, "b".into()), (3, "c".into())],
        };
        assert_eq!(
            status.report(),
            "tax: applied 2 b\ntax: applied 3 c\ntax: schema now at version 3\n"
        );
        let status = Status {
            applied: vec![],
            ..status
        };
        assert_eq!(status.report(), "tax: schema already at version 3\n");
    }
}
