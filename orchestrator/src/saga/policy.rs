//! How often each action is tried, how long to wait between tries, how long
//! to wait for a reply, and what to do when the tries run out.

use std::time::Duration;

use saga_protocol::Step;
use saga_shared::broker::Backoff;

/// What a forward step does once its attempts are exhausted. Compensations
/// always park: there is nothing left to fall back on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExhausted {
    /// Suspend the saga for support: after a missed deadline the effect
    /// may or may not have happened, so a person decides.
    Park,
    /// Compensate at once, including the failed step (its outcome may be
    /// unknown; compensations are no-ops when there is nothing to undo).
    Compensate,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// How long one attempt may go unanswered before it counts as
    /// transient with an unknown outcome.
    pub deadline: Duration,
    pub on_exhausted: OnExhausted,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            deadline: Duration::from_secs(10),
            on_exhausted: OnExhausted::Park,
        }
    }
}

impl RetryPolicy {
    /// Full jitter: uniform in `[0, min(max, base * 2^(retry-1))]`, where
    /// `unit` is a uniform sample in `[0, 1)` supplied by the caller so this
    /// stays deterministic.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        Backoff::new(self.base_delay, self.max_delay).delay(retry.saturating_sub(1), unit)
    }

    /// How long the broker may refuse this step's command before its saga
    /// parks: as long as the step would have been waited for had every
    /// attempt gone unanswered (`max_attempts` x `deadline`). A refusal is
    /// no worse than silence, and an operator who tuned one tunes both.
    pub fn publish_allowance(&self) -> Duration {
        self.deadline.saturating_mul(self.max_attempts.max(1))
    }

    /// The wait before publishing a refused command again, after `refusals`
    /// refusals: the step's own backoff, with half of it fixed so that a
    /// refused command is never retried in a tight loop.
    pub fn publish_backoff(&self, refusals: u32, unit: f64) -> Duration {
        let ceiling = self.delay(refusals, 1.0);
        (ceiling / 2 + ceiling.mul_f64(unit.clamp(0.0, 1.0)) / 2).max(MIN_PUBLISH_BACKOFF)
    }
}

/// The shortest wait before a refused command is published again.
const MIN_PUBLISH_BACKOFF: Duration = Duration::from_millis(20);

/// One policy per step: the defaults, with per-step overrides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepPolicies {
    by_step: [RetryPolicy; Step::COUNT],
}

impl StepPolicies {
    pub fn uniform(policy: RetryPolicy) -> Self {
        StepPolicies {
            by_step: [policy; Step::COUNT],
        }
    }

    pub fn with(mut self, step: Step, policy: RetryPolicy) -> Self {
        self.by_step[step.index()] = policy;
        self
    }

    pub fn for_step(&self, step: Step) -> &RetryPolicy {
        &self.by_step[step.index()]
    }
}

impl Default for StepPolicies {
    fn default() -> Self {
        StepPolicies::uniform(RetryPolicy::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(200));
        assert_eq!(p.delay(2, 1.0), Duration::from_millis(400));
        assert_eq!(p.delay(30, 1.0), Duration::from_secs(10));
        assert_eq!(p.delay(3, 0.0), Duration::ZERO);
    }

    #[test]
    fn a_refused_command_backs_off_at_least_half_the_step_backoff() {
        let p = RetryPolicy::default();
        assert_eq!(p.publish_backoff(1, 0.0), Duration::from_millis(100));
        assert_eq!(p.publish_backoff(1, 1.0), Duration::from_millis(200));
        assert_eq!(p.publish_backoff(30, 0.0), Duration::from_secs(5));
        assert_eq!(p.publish_allowance(), Duration::from_secs(50));
    }

    #[test]
    fn overrides_apply_to_their_step_only() {
        let slow = RetryPolicy {
            deadline: Duration::from_secs(60),
            ..RetryPolicy::default()
        };
        let policies = StepPolicies::default().with(Step::Charge, slow);
        assert_eq!(
            policies.for_step(Step::Charge).deadline,
            Duration::from_secs(60)
        );
        assert_eq!(
            policies.for_step(Step::Refund).deadline,
            Duration::from_secs(10)
        );
    }
}
