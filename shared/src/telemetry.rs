//! Logging, and traces over OTLP: JSON lines in production, readable lines
//! at a terminal; spans exported to an OpenTelemetry collector when the
//! standard `OTEL_*` variables ask for it, and not otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::subscriber::Interest;
use tracing::{span, Metadata};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::{ConfigError, Environment, Source};

/// What the trace exporter needs to start; every field comes from the
/// standard OpenTelemetry variables.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceExport {
    /// `OTEL_SERVICE_NAME`, else `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`, else the binary's own name.
    pub service_name: String,
}

/// Spans the exporter sends whatever `RUST_LOG` says: a quiet log must not
/// blind the traces. The HTTP request span is tower-http's, at debug. The
/// gauge refresher (every few seconds) and the notification listener (one
/// span as long as its connection) would each be a trace of their own with
/// no checkout in it.
const TRACE_FILTER: &str = "warn,orchestrator=info,workers=info,saga_shared=info,tower_http=debug,\
                            orchestrator::gauges=warn,orchestrator::listener=warn";

/// The provider installed by [`init_service`], shut down (flushed) once by
/// [`shutdown`].
static PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);

impl TraceExport {
    /// `None` when no OTLP endpoint is set, or `OTEL_SDK_DISABLED=true`, or
    /// `OTEL_TRACES_EXPORTER=none`. Only OTLP over HTTP with protobuf is
    /// built in; another protocol or exporter is refused by name rather
    /// than silently ignored.
    pub fn from_source(
        source: &impl Source,
        default_service: &str,
    ) -> Result<Option<TraceExport>, ConfigError> {
        let get = |name: &str| source.get(name).filter(|v| !v.trim().is_empty());
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match get("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "OTEL_TRACES_EXPORTER",
                    reason: format!("`{other}` is not supported: use `otlp` or `none`"),
                })
            }
        }
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            match get(name).as_deref().map(str::trim) {
                None | Some("http/protobuf") => {}
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        name: if name.contains("TRACES") {
                            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
                        } else {
                            "OTEL_EXPORTER_OTLP_PROTOCOL"
                        },
                        reason: format!(
                            "`{other}` is not supported: this build exports `http/protobuf` (the collector's port 4318)"
                        ),
                    })
                }
            }
        }
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            if let Some(url) = get(name) {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError::Invalid {
                        name: if name.contains("TRACES") {
                            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
                        } else {
                            "OTEL_EXPORTER_OTLP_ENDPOINT"
                        },
                        reason: "must start with http:// or https://".into(),
                    });
                }
            }
        }
        if get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
            && get("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        {
            return Ok(None);
        }
        let from_resource = || {
            get("OTEL_RESOURCE_ATTRIBUTES")?
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .find(|(key, _)| key.trim() == "service.name")
                .map(|(_, value)| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        Ok(Some(TraceExport {
            service_name: get("OTEL_SERVICE_NAME")
                .map(|v| v.trim().to_owned())
                .or_else(from_resource)
                .unwrap_or_else(|| default_service.to_owned()),
        }))
    }
}

/// Installs the global subscriber once, logs only (operator tools).
/// `LOG_FORMAT=json|pretty` overrides the choice made from whether stderr
/// is a terminal.
pub fn init(default_filter: &str) {
    let _ = tracing_subscriber::registry()
        .with(log_layer(default_filter))
        .try_init();
}

/// Installs the global subscriber of a service: its log, and its spans
/// exported over OTLP when the `OTEL_*` variables say so (see
/// [`TraceExport::from_source`]). A malformed variable is an error naming
/// it. Call [`shutdown`] before exiting so the last spans are sent.
pub fn init_service(default_filter: &str, service: &str) -> Result<(), ConfigError> {
    let Some(export) = TraceExport::from_source(&Environment, service)? else {
        init(default_filter);
        return Ok(());
    };
    // The exporter reads the endpoint, headers, timeout and compression
    // from the same variables itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|error| ConfigError::Invalid {
            name: "OTEL_EXPORTER_OTLP_ENDPOINT",
            reason: error.to_string(),
        })?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(export.service_name.clone())
                .build(),
        )
        .build();
    let installed = tracing_subscriber::registry()
        .with(log_layer(default_filter))
        .with(trace_layer(provider.tracer(service.to_owned())))
        .try_init();
    if installed.is_ok() {
        *PROVIDER.lock().expect("provider lock is never poisoned") = Some(provider);
        tracing::info!(
            service_name = %export.service_name,
            "exporting spans over OTLP (http/protobuf)"
        );
    }
    Ok(())
}

/// Sends the spans still buffered and stops the exporter, waiting at most
/// `within` (a collector that does not answer must not hold the exit up).
/// Does nothing when no exporter runs, or the second time.
pub async fn shutdown(within: Duration) {
    let Some(provider) = PROVIDER
        .lock()
        .expect("provider lock is never poisoned")
        .take()
    else {
        return;
    };
    // The SDK's batch processor blocks while it flushes.
    let flushed = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(within));
    match tokio::time::timeout(within + Duration::from_millis(100), flushed).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::warn!(%error, "trace exporter did not flush cleanly"),
        Ok(Err(error)) => tracing::warn!(%error, "trace exporter shutdown failed"),
        Err(_) => tracing::warn!(?within, "trace exporter did not flush in time; spans lost"),
    }
}

fn trace_layer<S>(tracer: opentelemetry_sdk::trace::Tracer) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(AskEveryTime(EnvFilter::new(TRACE_FILTER)))
}

fn log_layer<S>(default_filter: &str) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    // lapin logs every channel the broker closes at ERROR, the passive
    // checks of `Topology::declare` that find a queue missing on a fresh
    // broker among them; every close that matters reaches our code as an
    // error and is logged there, with what it was doing.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_filter},lapin::channel=off")));
    let json = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("pretty") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let filter = AskEveryTime(filter);
    let builder = fmt::layer().with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_filter(filter)
            .boxed()
    } else {
        builder.with_filter(filter).boxed()
    }
}

/// A per-layer filter whose answer is asked for every span and event, never
/// cached for their callsite as `always`.
///
/// Per-layer filters hand their answer to their layer through a
/// thread-local set by the dispatcher's `enabled`, which `tracing` skips
/// for a callsite every filter cached as `always`. A dependency that asks
/// `enabled` and then emits nothing (sqlx's query logger asks `log`'s
/// `log_enabled!` after every statement, which `tracing-log` turns into
/// `enabled`) leaves its answers there, and the next such span takes them
/// as its own: the exporter missed the workers' `command` and the
/// orchestrator's `reply` spans, and the spans under them started traces
/// of their own, whenever the log enabled what the traces do (`RUST_LOG`
/// at `info`, a service's default).
/// Asking each time overwrites the stale answers, for every layer, at the
/// cost of one filter match per span and event.
/// <https://github.com/tokio-rs/tracing/issues/2519>
struct AskEveryTime<F>(F);

impl<S, F: Filter<S>> Filter<S> for AskEveryTime<F> {
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        self.0.enabled(meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        let interest = self.0.callsite_enabled(meta);
        if interest.is_never() {
            interest
        } else {
            Interest::sometimes()
        }
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, cx: &Context<'_, S>) -> bool {
        self.0.event_enabled(event, cx)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, cx)
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: Context<'_, S>) {
        self.0.on_record(id, values, cx)
    }

    fn on_enter(&self, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_enter(id, cx)
    }

    fn on_exit(&self, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_exit(id, cx)
    }

    fn on_close(&self, id: span::Id, cx: Context<'_, S>) {
        self.0.on_close(id, cx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Vars(HashMap<&'static str, &'static str>);

    impl Source for Vars {
        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
    }

    fn export(vars: &[(&'static str, &'static str)]) -> Result<Option<TraceExport>, ConfigError> {
        TraceExport::from_source(&Vars(vars.iter().copied().collect()), "tax")
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert_eq!(export(&[]).unwrap(), None);
        assert_eq!(export(&[("OTEL_SERVICE_NAME", "tax-eu")]).unwrap(), None);
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")];
        assert_eq!(
            export(&on).unwrap(),
            Some(TraceExport {
                service_name: "tax".into()
            })
        );
        let named = [
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces",
            ),
            ("OTEL_SERVICE_NAME", "tax-eu"),
        ];
        assert_eq!(export(&named).unwrap().unwrap().service_name, "tax-eu");
        let in_resource = [
            on[0],
            ("OTEL_RESOURCE_ATTRIBUTES", "team=core, service.name=tax-us"),
        ];
        assert_eq!(
            export(&in_resource).unwrap().unwrap().service_name,
            "tax-us"
        );
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(export(&[on[0], off]).unwrap(), None, "{off:?}");
        }
    }

    #[test]
    fn a_span_is_exported_after_a_dependency_asked_about_a_level_only_the_log_shows() {
        let provider = SdkTracerProvider::builder().build();
        let log = fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(AskEveryTime(EnvFilter::new("info")));
        let subscriber = tracing_subscriber::registry()
            .with(log)
            .with(trace_layer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            // Asked, and nothing logged: sqlx does so after every statement.
            let _ = tracing::enabled!(target: "lapin::channels", tracing::Level::INFO);
            let command = tracing::info_span!("command");
            assert!(
                crate::traceparent::of(&command).is_some(),
                "the exporter sees the span"
            );
        });
    }

    #[test]
    fn the_trace_filter_is_well_formed() {
        EnvFilter::try_new(TRACE_FILTER).expect("every directive parses");
    }

    #[test]
    fn a_value_this_build_cannot_honour_is_refused_by_name() {
        let cases = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ];
        for (name, value) in cases {
            let mut vars = vec![("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318")];
            if name == "OTEL_EXPORTER_OTLP_ENDPOINT" {
                vars.clear();
            }
            vars.push((name, value));
            let error = export(&vars).unwrap_err().to_string();
            assert!(error.contains(name), "{name}={value}: {error}");
        }
    }
}
