//! A service binary a test starts as a process of its own.

use std::process::Stdio;

use tokio::process::{Child, Command};

/// How every test starts a service binary: nothing on its stdin, its
/// stdout dropped (services log to stderr), and killed should the test
/// drop it, pass or fail.
pub trait ServiceCommand {
    /// Starts the service with its stderr going to `stderr`: usually
    /// [`crate::service_log`], or piped when the test reads the logs.
    fn spawn_service(&mut self, stderr: Stdio) -> std::io::Result<Child>;
}

impl ServiceCommand for Command {
    fn spawn_service(&mut self, stderr: Stdio) -> std::io::Result<Child> {
        self.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
    }
}
