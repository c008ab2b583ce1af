//! Reconnect delays: exponential growth with jitter, so a fleet of devices
//! does not reconnect in lockstep after flock restarts.
//!
//! Invariants: the n-th delay (counting from 0) lies in `[d/2, d]` where
//! `d = min(max, initial * 2^n)`; randomness comes in as a plain `u64`, so
//! the policy is deterministic under test.

use std::time::Duration;

/// How delays grow for one kind of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The ceiling of the first delay.
    pub initial: Duration,
    /// The ceiling of every delay.
    pub max: Duration,
}

impl BackoffPolicy {
    /// Transport failures (refused, reset, garbage, silence): starts at
    /// 100 ms and stays at most 4 s, so a device is registered again within
    /// 5 s of flock coming back (connects are cheap for flock to refuse, and
    /// its per-source limits still apply).
    pub const TRANSPORT: BackoffPolicy = BackoffPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(4),
    };
    /// `Rejected` (name taken by another key, …): retrying soon cannot
    /// help, so start at a minute and grow to half an hour.
    pub const REJECTED: BackoffPolicy = BackoffPolicy {
        initial: Duration::from_secs(60),
        max: Duration::from_secs(30 * 60),
    };
}

/// The attempt counter for one policy.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Backoff {
        Backoff { policy, attempt: 0 }
    }

    /// The ceiling `d` of the next delay (before jitter).
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.policy
            .initial
            .checked_mul(factor)
            .unwrap_or(self.policy.max)
            .min(self.policy.max)
    }

    /// The next delay, in `[d/2, d]` chosen by `random`, and counts the attempt.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let d = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = d / 2;
        let span = (d - half).as_nanos() as u64;
        half + Duration::from_nanos(random % span.saturating_add(1))
    }

    /// Back to the first delay (after a connection that worked for a while).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// A small seeded generator for jitter (SplitMix64); not for secrets.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn seeded(seed: u64) -> Jitter {
        Jitter(seed)
    }

    /// Seeded from the kernel's random source (a fixed seed if that fails:
    /// jitter is only spread, not security).
    pub fn from_os() -> Jitter {
        let mut b = [0u8; 8];
        let _ = crate::state_dir::os_random(&mut b);
        Jitter(u64::from_le_bytes(b))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubling_within_jitter_bounds_and_caps() {
        let mut b = Backoff::new(BackoffPolicy::TRANSPORT);
        let mut rng = Jitter::seeded(7);
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            let d = b.ceiling();
            ceilings.push(d);
            for r in [0, u64::MAX, rng.next_u64()] {
                let mut probe = b.clone();
                let got = probe.next_delay(r);
                assert!(
                    got >= d / 2 && got <= d,
                    "{got:?} outside [{:?}, {d:?}]",
                    d / 2
                );
            }
            b.next_delay(rng.next_u64());
        }
        assert_eq!(ceilings[0], Duration::from_millis(100));
        assert_eq!(ceilings[1], Duration::from_millis(200));
        assert_eq!(ceilings[5], Duration::from_millis(3200));
        assert!(ceilings[6..].iter().all(|d| *d == Duration::from_secs(4)));
        assert_eq!(b.attempts(), 12);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn extremes_of_the_random_value_hit_both_ends() {
        let mut b = Backoff::new(BackoffPolicy::REJECTED);
        assert_eq!(b.clone().next_delay(0), Duration::from_secs(30));
        let span = Duration::from_secs(30).as_nanos() as u64;
        assert_eq!(b.next_delay(span), Duration::from_secs(60));
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(BackoffPolicy {
            initial: Duration::from_secs(u64::MAX / 4),
            max: Duration::MAX,
        });
        for _ in 0..100 {
            let _ = b.next_delay(u64::MAX);
        }
        assert!(b.ceiling() <= Duration::MAX);
    }

    #[test]
    fn jitter_spreads() {
        let mut j = Jitter::seeded(1);
        let a: Vec<u64> = (0..4).map(|_| j.next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] != w[1]));
    }
}
