//! Monotonic timestamps on the kernel's CLOCK_MONOTONIC.
//!
//! `std::time::Instant` is opaque, but GPIO edge events carry raw
//! CLOCK_MONOTONIC nanoseconds; this type lets both meet. Time is still
//! injected into the state machines: they take a `Mono`, they never read it.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Nanoseconds on CLOCK_MONOTONIC.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Mono(pub u64);

impl Mono {
    pub const ZERO: Mono = Mono(0);

    /// Reads CLOCK_MONOTONIC. Only the IO shells call this.
    pub fn now() -> Mono {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        debug_assert_eq!(rc, 0);
        Mono(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    }

    pub fn from_nanos(ns: u64) -> Mono {
        Mono(ns)
    }

    pub fn from_micros(us: u64) -> Mono {
        Mono(us.saturating_mul(1_000))
    }

    pub fn from_millis(ms: u64) -> Mono {
        Mono(ms.saturating_mul(1_000_000))
    }

    pub fn as_nanos(self) -> u64 {
        self.0
    }

    pub fn as_micros(self) -> u64 {
        self.0 / 1_000
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Mono) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Mono {
    type Output = Mono;
    fn add(self, d: Duration) -> Mono {
        Mono(
            self.0
                .saturating_add(d.as_nanos().min(u64::MAX as u128) as u64),
        )
    }
}

impl std::ops::Sub<Duration> for Mono {
    type Output = Mono;
    fn sub(self, d: Duration) -> Mono {
        Mono(
            self.0
                .saturating_sub(d.as_nanos().min(u64::MAX as u128) as u64),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_monotonic_and_arithmetic_saturates() {
        let a = Mono::now();
        let b = Mono::now();
        assert!(b >= a);
        assert_eq!(Mono(5).saturating_since(Mono(9)), Duration::ZERO);
        assert_eq!(Mono(5) - Duration::from_nanos(9), Mono(0));
        assert_eq!(
            Mono::from_millis(2) + Duration::from_millis(3),
            Mono::from_millis(5)
        );
    }
}
