//! The machine's floor: what PostgreSQL and RabbitMQ alone allow on this
//! box, and so how many checkouts it could complete at best.

use std::time::Duration;

use crate::latency::{millis, LatencySummary};

/// A checkout costs about this many saga-step transactions (orchestrator
/// and worker steps)...
pub const STEP_TRANSACTIONS_PER_CHECKOUT: f64 = 7.0;
/// ...and this many persistent, confirmed messages (three commands, three
/// replies).
pub const MESSAGES_PER_CHECKOUT: f64 = 6.0;

/// One probe's figures: a rate with many clients, latency with one.
#[derive(Clone, Copy, Debug)]
pub struct ProbeFigures {
    pub clients: usize,
    pub loaded_rate: f64,
    pub loaded: LatencySummary,
    pub alone: LatencySummary,
}

impl ProbeFigures {
    /// One line of the floor's report: `what` was measured, by how many
    /// `clients`, and the latency `alone` is of.
    fn write_line(
        &self,
        f: &mut std::fmt::Formatter<'_>,
        what: &str,
        clients: &str,
        alone: &str,
    ) -> std::fmt::Result {
        writeln!(
            f,
            "  {what}: {:.0}/s at {} {clients} ({}), {alone} p50 {:.2} ms p99 {:.2} ms",
            self.loaded_rate,
            self.clients,
            self.loaded,
            millis(self.alone.p50),
            millis(self.alone.p99)
        )
    }
}

#[derive(Clone, Copy, Debug)]
pub struct MachineFloor {
    pub step: ProbeFigures,
    pub message: ProbeFigures,
}

impl MachineFloor {
    /// The checkouts per second the box allows. Each probe ran with the
    /// machine to itself, but a checkout needs both on the same cores, so
    /// their costs per checkout add rather than overlap.
    pub fn checkouts_per_second(&self) -> f64 {
        let seconds_per_checkout = STEP_TRANSACTIONS_PER_CHECKOUT / self.step.loaded_rate
            + MESSAGES_PER_CHECKOUT / self.message.loaded_rate;
        1.0 / seconds_per_checkout
    }

    /// One checkout alone, if nothing but its transactions and messages
    /// took time (medians).
    pub fn checkout_alone(&self) -> Duration {
        self.step.alone.p50.mul_f64(STEP_TRANSACTIONS_PER_CHECKOUT)
            + self.message.alone.p50.mul_f64(MESSAGES_PER_CHECKOUT)
    }

    /// `rate` checkouts per second as a share of what the box allows.
    pub fn share(&self, rate: f64) -> f64 {
        rate / self.checkouts_per_second()
    }
}

impl std::fmt::Display for MachineFloor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.step
            .write_line(f, "step transaction (one statement)", "clients", "alone")?;
        self.message.write_line(
            f,
            "confirmed message on a quorum queue",
            "publishers",
            "publish-to-deliver alone",
        )?;
        write!(
            f,
            "  so the box allows about {:.0} checkouts/s ({} step transactions + {} messages each) and {:.1} ms for one alone",
            self.checkouts_per_second(),
            STEP_TRANSACTIONS_PER_CHECKOUT,
            MESSAGES_PER_CHECKOUT,
            millis(self.checkout_alone())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(rate: f64, alone_p50_micros: u64) -> ProbeFigures {
        ProbeFigures {
            clients: 16,
            loaded_rate: rate,
            loaded: LatencySummary::default(),
            alone: LatencySummary {
                count: 1000,
                p50: Duration::from_micros(alone_p50_micros),
                ..Default::default()
            },
        }
    }

    #[test]
    fn the_issues_figures_give_about_a_thousand_checkouts_and_five_ms() {
        // 15,000 transactions/s and 0.24 ms; 12,900 messages/s and 0.6 ms.
        let floor = MachineFloor {
            step: probe(15_000.0, 240),
            message: probe(12_900.0, 600),
        };
        let rate = floor.checkouts_per_second();
        assert!((rate - 1073.0).abs() < 1.0, "{rate}");
        assert_eq!(
            floor.checkout_alone(),
            Duration::from_micros(7 * 240 + 6 * 600)
        );
        assert!((floor.share(rate / 5.0) - 0.2).abs() < 1e-9);
    }
}
