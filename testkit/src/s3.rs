//! An S3-compatible server (moto's, scripts/s3-server) started for one
//! test: its own port, state in memory, killed with the test.

use std::path::Path;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{eventually, free_port, service_log, ServiceCommand};

pub struct LocalS3 {
    pub port: u16,
    _child: Child,
}

impl LocalS3 {
    /// Installs the server once and starts it.
    pub async fn start() -> LocalS3 {
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join("scripts/s3-server");
        let child = Command::new(script)
            .arg("--port")
            .arg(port.to_string())
            .spawn_service(service_log())
            .expect("scripts/s3-server starts");
        let url = format!("http://127.0.0.1:{port}/");
        eventually("the S3 server answers", Duration::from_secs(180), || {
            let url = url.clone();
            async move { reqwest::get(&url).await.ok().map(|_| ()) }
        })
        .await;
        LocalS3 {
            port,
            _child: child,
        }
    }

    /// Makes bucket `name`.
    pub async fn bucket(&self, name: &str) {
        let answer = reqwest::Client::new()
            .put(format!("http://127.0.0.1:{}/{name}", self.port))
            .send()
            .await
            .expect("the S3 server answers");
        assert!(answer.status().is_success(), "{answer:?}");
    }

    /// The `AWS_*` variables a client of this server needs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ]
    }
}
