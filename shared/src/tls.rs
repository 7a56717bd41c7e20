//! Encrypted connections: the CA file a service trusts for RabbitMQ, the
//! TLS settings of `DATABASE_URL` checked once at start, and a refused TLS
//! handshake told apart from a server that is merely away. Retrying cannot
//! mend a wrong CA or a certificate for another host, so a refusal stops
//! the process with an error naming the variable to fix, where an outage
//! is waited out.

use std::error::Error;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::config::{ConfigError, Source};

/// A CA file, read and checked at start: PEM holding at least one
/// certificate. A service reads it once; replacing it takes a restart.
#[derive(Clone, PartialEq, Eq)]
pub struct CaFile {
    pub path: PathBuf,
    /// The setting that named the file, for errors.
    pub variable: &'static str,
    pem: String,
}

impl std::fmt::Debug for CaFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CaFile").field(&self.path).finish()
    }
}

impl CaFile {
    /// Reads `path`; an error names `variable`, the setting that gave it.
    pub fn read(path: &Path, variable: &'static str) -> Result<CaFile, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            name: variable,
            reason,
        };
        let pem = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("cannot read the CA file {}: {e}", path.display())))?;
        let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("the CA file {} is not PEM: {e}", path.display())))?;
        if certificates.is_empty() {
            return Err(invalid(format!(
                "the CA file {} holds no PEM certificate",
                path.display()
            )));
        }
        Ok(CaFile {
            path: path.to_owned(),
            variable,
            pem,
        })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }
}

/// The CA that verifies an `amqps://` broker: `AMQP_CA_FILE`, else the
/// `cacertfile` parameter of `AMQP_URL` (the name RabbitMQ's own URI
/// syntax gives it). `None` when neither is set: the system's CA store
/// then verifies the broker, as for any public server.
pub fn amqp_ca(source: &dyn Source, amqp_url: &str) -> Result<Option<CaFile>, ConfigError> {
    let from_env = source.get("AMQP_CA_FILE").filter(|v| !v.trim().is_empty());
    let (variable, path) = match (from_env, query_parameter(amqp_url, &["cacertfile"])) {
        (Some(path), _) => ("AMQP_CA_FILE", path),
        (None, Some(path)) => ("AMQP_URL", path),
        (None, None) => return Ok(None),
    };
    if !amqp_url
        .split(',')
        .any(|url| url.trim().starts_with("amqps://"))
    {
        // A CA for a plain connection means the operator believes it is
        // encrypted: it would not be.
        return Err(ConfigError::Invalid {
            name: variable,
            reason: "a CA file is set but AMQP_URL is not amqps://, so nothing would be encrypted"
                .into(),
        });
    }
    CaFile::read(Path::new(path.trim()), variable).map(Some)
}

/// What libpq accepts as `sslmode`.
const SSL_MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// The TLS settings of `DATABASE_URL`, checked at start: a known
/// `sslmode`, and an `sslrootcert` that is a readable PEM file (sqlx would
/// only find out at the first connection, and call it I/O).
pub fn check_database_url(url: &str) -> Result<(), ConfigError> {
    if let Some(mode) = query_parameter(url, &["sslmode", "ssl-mode"]) {
        if !SSL_MODES.contains(&mode.as_str()) {
            return Err(ConfigError::Invalid {
                name: "DATABASE_URL",
                reason: format!("sslmode `{mode}` is not one of {}", SSL_MODES.join(", ")),
            });
        }
    }
    if let Some(path) = database_root_cert(url) {
        CaFile::read(Path::new(&path), "DATABASE_URL")?;
    }
    Ok(())
}

/// Whether a PostgreSQL URL says `sslmode` at all.
pub fn database_url_sets_ssl_mode(url: &str) -> bool {
    query_parameter(url, &["sslmode", "ssl-mode"]).is_some()
}

/// The `sslrootcert` of a PostgreSQL URL (under any name sqlx reads).
pub fn database_root_cert(url: &str) -> Option<String> {
    query_parameter(url, &["sslrootcert", "ssl-root-cert", "ssl-ca"])
}

/// A query parameter of `url` (or of any URL in a comma-separated list),
/// percent-decoded.
fn query_parameter(url: &str, names: &[&str]) -> Option<String> {
    url.split(',')
        .filter_map(|url| url.split_once('?').map(|(_, query)| query))
        .flat_map(|query| query.split('&'))
        .find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            names.contains(&key).then(|| percent_decoded(value))
        })
}

fn percent_decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A TLS handshake refused on the certificate or the protocol: a CA that
/// did not sign the server's certificate, a certificate for another host,
/// a server that does not speak TLS.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{variable}: the TLS connection to {server} was refused: {reason} (check {hint})")]
pub struct TlsRefused {
    /// The setting to fix.
    pub variable: &'static str,
    server: &'static str,
    reason: String,
    hint: &'static str,
}

impl TlsRefused {
    pub fn database(reason: String) -> Self {
        TlsRefused {
            variable: "DATABASE_URL",
            server: "PostgreSQL",
            reason,
            hint: "its host, sslmode and sslrootcert",
        }
    }

    /// `variable` is where the CA came from (`AMQP_CA_FILE`, or `AMQP_URL`
    /// for its `cacertfile` or the system's store).
    pub fn broker(variable: &'static str, reason: String) -> Self {
        TlsRefused {
            variable,
            server: "RabbitMQ",
            reason,
            hint: "the CA file and the host name in AMQP_URL",
        }
    }
}

/// Chooses rustls' crypto for the whole process, once. The build carries
/// two (sqlx's ring, lapin's aws-lc-rs), and rustls then refuses to guess:
/// sqlx's `verify-ca` check would panic at the first connection without
/// this. Called by whatever opens a connection; later calls do nothing.
pub fn install_crypto_provider() {
    // Err only when a provider is installed already, which is the point.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The TLS failure anywhere in `error`'s chain, in words, if there is one.
/// sqlx and lapin both hand rustls' error up inside an I/O error.
pub fn handshake_failure(error: &(dyn Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(error) = next {
        let tls = error.downcast_ref::<rustls::Error>().or_else(|| {
            error
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return Some(described(tls));
        }
        next = error.source();
    }
    None
}

fn described(error: &rustls::Error) -> String {
    use rustls::{CertificateError, Error as Tls};
    match error {
        Tls::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the server's certificate is not signed by a trusted CA (unknown issuer)".into()
        }
        Tls::InvalidCertificate(CertificateError::NotValidForName)
        | Tls::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "the server's certificate does not name this host".into()
        }
        Tls::InvalidCertificate(CertificateError::Expired)
        | Tls::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            "the server's certificate has expired".into()
        }
        other => format!("TLS: {other}"),
    }
}

/// Whether `error` was caused by a refused TLS handshake: the process then
/// stops as for any other configuration error (exit code 2).
pub fn is_refusal(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<TlsRefused>() {
            return true;
        }
        next = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::variables as environment;

    /// A PEM file under the temp directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &str) -> TempFile {
            let path = std::env::temp_dir().join(format!("tls-{}.pem", uuid::Uuid::new_v4()));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    // Any DER bytes do for reading: the file is checked to be PEM
    // certificates, the certificate itself is checked by the handshake.
    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";

    #[test]
    fn the_ca_file_comes_from_the_variable_or_the_url() {
        let ca = TempFile::new(PEM);
        let url = "amqps://guest:guest@broker:5671/%2f";
        let found = amqp_ca(&environment(&[("AMQP_CA_FILE", ca.path())]), url).unwrap();
        assert_eq!(found.unwrap().path, ca.0);

        let encoded = ca.path().replace('/', "%2F");
        let with_parameter = format!("{url}?heartbeat=10&cacertfile={encoded}");
        let found = amqp_ca(&environment(&[]), &with_parameter).unwrap();
        assert_eq!(found.unwrap().path, ca.0);

        assert_eq!(amqp_ca(&environment(&[]), url).unwrap(), None);
    }

    #[test]
    fn a_missing_or_unusable_ca_file_names_the_variable() {
        let url = "amqps://broker:5671/%2f";
        let err = amqp_ca(
            &environment(&[("AMQP_CA_FILE", "/nonexistent/ca.pem")]),
            url,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("AMQP_CA_FILE is invalid"), "{text}");
        assert!(text.contains("/nonexistent/ca.pem"), "{text}");

        let not_pem = TempFile::new("hello\n");
        let err = amqp_ca(&environment(&[("AMQP_CA_FILE", not_pem.path())]), url).unwrap_err();
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );

        let err = amqp_ca(
            &environment(&[]),
            &format!("{url}?cacertfile=/nonexistent/ca.pem"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("AMQP_URL is invalid"), "{err}");
    }

    #[test]
    fn a_ca_file_for_a_plain_connection_is_refused() {
        let ca = TempFile::new(PEM);
        let err = amqp_ca(
            &environment(&[("AMQP_CA_FILE", ca.path())]),
            "amqp://guest:guest@broker:5672/%2f",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("AMQP_CA_FILE is invalid"), "{text}");
        assert!(text.contains("not amqps://"), "{text}");
    }

    #[test]
    fn the_database_url_tls_settings_are_checked_at_start() {
        let ca = TempFile::new(PEM);
        let base = "postgres://u:hunter2@db:5432/orders";
        check_database_url(base).unwrap();
        check_database_url(&format!(
            "{base}?sslmode=verify-full&sslrootcert={}",
            ca.path()
        ))
        .unwrap();

        let err = check_database_url(&format!("{base}?sslmode=verify")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("DATABASE_URL is invalid"), "{text}");
        assert!(text.contains("sslmode `verify`"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");

        let err =
            check_database_url(&format!("{base}?sslrootcert=/nonexistent/root.crt")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("DATABASE_URL is invalid"), "{text}");
        assert!(text.contains("/nonexistent/root.crt"), "{text}");
    }

    #[test]
    fn a_refusal_is_found_through_the_error_chain() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let reason = handshake_failure(&io).expect("a TLS failure");
        assert!(reason.contains("not signed by a trusted CA"), "{reason}");
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(handshake_failure(&plain), None);

        let wrapped = sqlx::Error::Tls(Box::new(TlsRefused::database(reason)));
        assert!(is_refusal(&wrapped));
        assert!(wrapped.to_string().contains("DATABASE_URL"), "{wrapped}");
        assert!(!is_refusal(&sqlx::Error::PoolTimedOut));
    }
}
