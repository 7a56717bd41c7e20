//! The broker's one-shot commands and start-up step: `orchestrator
//! topology`, `orchestrator broker-users`, and the queue policies each
//! service checks at start. They read their own settings from the
//! environment and stand above the management client and the broker.

use std::time::Duration;

use reqwest::StatusCode;

use crate::broker_users::{given_passwords, worker_users};
use crate::config::url_as;
use crate::queue_policies::{Applied, Management, PolicyError};
use crate::topology::Topology;

/// At a service's start: creates the policies that are missing. A broker
/// without the management API still runs the service, with one warning
/// saying what is missing and how to fix it.
pub async fn ensure_at_start(config: &crate::service_config::ServiceConfig, topology: &Topology) {
    let applied = match config.management() {
        Ok(management) => management.apply(topology, false).await,
        Err(error) => Err(error),
    };
    match applied {
        Ok(applied) => {
            for outcome in applied {
                match outcome {
                    Applied::Created(name) => {
                        tracing::info!(policy = %name, "queue policy created")
                    }
                    Applied::LeftAsItIs(name) => tracing::warn!(
                        policy = %name,
                        "queue policy differs from this build's; left as it is: run `orchestrator topology` to apply this build's"
                    ),
                    Applied::Updated(_) | Applied::Unchanged(_) => {}
                }
            }
        }
        // A worker's least-privilege user has no management access: the
        // orchestrator's user keeps the policies.
        Err(PolicyError::Refused { status, .. })
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN =>
        {
            tracing::info!(
                "queue policies left to the orchestrator: this RabbitMQ user may not manage them"
            )
        }
        Err(error) => tracing::warn!(
            %error,
            "queue policies not checked: until they exist, a message that keeps crashing its consumer is not dead-lettered. \
             Enable RabbitMQ's management plugin (or set RABBITMQ_MANAGEMENT_URL) and run `orchestrator topology`"
        ),
    }
}

/// What a broker command reads: AMQP_URL (and its CA), AMQP_PREFIX and
/// RABBITMQ_MANAGEMENT_URL.
pub(crate) type BrokerSettings = (
    secrecy::SecretString,
    Option<crate::tls::CaFile>,
    String,
    Option<secrecy::SecretString>,
);

impl Management {
    /// A command's client of the management API, from its settings; a bad
    /// address is said on stderr, with exit code 2.
    pub(crate) fn from_settings(
        amqp_url: &secrecy::SecretString,
        management_url: Option<&secrecy::SecretString>,
    ) -> Result<Management, std::process::ExitCode> {
        use secrecy::ExposeSecret;
        Management::new(
            amqp_url.expose_secret(),
            management_url.map(|url| url.expose_secret()),
        )
        .map_err(|error| {
            eprintln!("error: {error}");
            std::process::ExitCode::from(2)
        })
    }
}

pub(crate) fn broker_settings() -> Result<BrokerSettings, crate::config::ConfigError> {
    use secrecy::ExposeSecret;
    let source = crate::config::Environment;
    let amqp_url = crate::config::amqp_url(&source)?;
    let ca = crate::tls::amqp_ca(&source, amqp_url.expose_secret())?;
    let prefix = crate::config::prefix(&source)?;
    let management = crate::config::management_url(&source)?;
    Ok((amqp_url, ca, prefix, management))
}

/// `orchestrator topology`: the explicit, idempotent step that makes the
/// broker what this build expects: exchanges, queues and bindings declared
/// where missing, and the queue policies set to this build's, overwriting
/// an older release's. Needs AMQP_URL, AMQP_PREFIX and, unless the broker
/// is on AMQP's own port, RABBITMQ_MANAGEMENT_URL.
pub async fn topology_command() -> std::process::ExitCode {
    use secrecy::ExposeSecret;
    use std::process::ExitCode;

    let (amqp_url, ca, prefix, management_url) = match broker_settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let topology = Topology::new(&prefix);
    let management = match Management::from_settings(&amqp_url, management_url.as_ref()) {
        Ok(management) => management,
        Err(code) => return code,
    };
    // Declared first: a policy applies to the queues it matches.
    let stop = tokio_util::sync::CancellationToken::new();
    let connect = crate::broker::Broker::connect_with_ca(
        amqp_url.expose_secret(),
        ca.as_ref(),
        topology.clone(),
        "topology",
        &stop,
    );
    let broker = match tokio::time::timeout(Duration::from_secs(30), connect).await {
        Ok(Ok(broker)) => broker,
        Ok(Err(error)) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
        Err(_) => {
            stop.cancel();
            eprintln!("error: RabbitMQ did not accept a connection within 30s");
            return ExitCode::FAILURE;
        }
    };
    broker.close().await;
    println!("exchanges, queues and bindings of prefix '{prefix}' declared where missing");
    match management.apply(&topology, true).await {
        Ok(applied) => {
            for outcome in applied {
                let line = match outcome {
                    Applied::Created(name) => format!("policy {name}: created"),
                    Applied::Updated(name) => format!("policy {name}: updated to this build's"),
                    Applied::Unchanged(name) => format!("policy {name}: already this build's"),
                    Applied::LeftAsItIs(name) => format!("policy {name}: left as it is"),
                };
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `orchestrator broker-users`: creates each service's user where missing
/// and sets every one's permissions to this build's, through the management
/// API as AMQP_URL's (administrator) user. Prints, once, an environment
/// line per new user (its service's AMQP_URL) and WORKER_USERS.
pub async fn broker_users_command(base: &str, rotate: bool) -> std::process::ExitCode {
    use secrecy::ExposeSecret;
    use std::process::ExitCode;

    let (amqp_url, _ca, prefix, management_url) = match broker_settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let management = match Management::from_settings(&amqp_url, management_url.as_ref()) {
        Ok(management) => management,
        Err(code) => return code,
    };
    let given = match given_passwords(&crate::config::Environment) {
        Ok(given) => given,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let topology = Topology::new(&prefix);
    let users = match management
        .ensure_users(&topology, base, rotate, &given)
        .await
    {
        Ok(users) => users,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("# RabbitMQ users of prefix '{prefix}', each with its service's least permissions");
    for user in &users {
        let variable = format!("{}_AMQP_URL", user.role.as_str().to_uppercase());
        match &user.password {
            Some(password) => println!(
                "{variable}={}",
                url_as(
                    amqp_url.expose_secret(),
                    &user.name,
                    password.expose_secret()
                )
            ),
            None if user.given => println!(
                "# {variable}: user {} has the password of {}",
                user.name,
                user.role.password_variable()
            ),
            None => println!(
                "# {variable}: user {} exists; its password is unchanged",
                user.name
            ),
        }
    }
    println!("# the orchestrator's: replies only from these users");
    println!("WORKER_USERS={}", worker_users(base));
    ExitCode::SUCCESS
}
