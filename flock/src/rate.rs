//! Token buckets for flock's rate limits. Invariant: tokens never exceed
//! the capacity and time only moves forward (an earlier `now` adds none).

use std::time::{Duration, Instant};

/// A bucket refilled at `rate` tokens per second up to `capacity`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: u32, per: Duration, now: Instant) -> Self {
        let capacity = f64::from(capacity.max(1));
        let rate = capacity / per.as_secs_f64().max(1e-3);
        Self {
            capacity,
            rate,
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity);
        if now > self.last {
            self.last = now;
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// True when the bucket has refilled completely (its state can be forgotten).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, Duration::from_secs(3), t0);
        assert!(b.take(t0) && b.take(t0) && b.take(t0));
        assert!(!b.take(t0));
        assert!(!b.take(t0 + Duration::from_millis(500)));
        assert!(b.take(t0 + Duration::from_millis(1100)));
        assert!(!b.take(t0 + Duration::from_millis(1100)));
        assert!(b.is_full(t0 + Duration::from_secs(10)));
        // Going back in time gives nothing.
        let mut b = TokenBucket::new(1, Duration::from_secs(1), t0 + Duration::from_secs(5));
        assert!(b.take(t0 + Duration::from_secs(5)));
        assert!(!b.take(t0));
    }
}
