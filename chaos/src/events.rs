//! What happens during the run, one line each on stderr, stamped with the
//! time since the run began, so a line can be matched with the service logs
//! (and a kill with the errors it caused).

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// The instant the run's clock starts (the first call wins).
pub fn start() {
    START.get_or_init(Instant::now);
}

pub fn elapsed_seconds() -> f64 {
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// `event!("killed {name}")` prints `[  12.3s] killed payment-a`.
macro_rules! event {
    ($($arg:tt)*) => {
        eprintln!("[{:7.1}s] {}", $crate::events::elapsed_seconds(), format_args!($($arg)*))
    };
}
pub(crate) use event;
