//! Reconnect delays: exponential with full jitter ("sleep a random time up to the ceiling"),
//! so a broker restart is not met by every agent at the same instant.

use std::time::Duration;

/// Exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    base_us: u64,
    cap_us: u64,
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// Delays whose ceiling starts at `base` and doubles up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self::with_rng(base, cap, fastrand::Rng::new())
    }

    /// Like [`Backoff::new`] with a given random source (tests use a seed).
    pub fn with_rng(base: Duration, cap: Duration, rng: fastrand::Rng) -> Self {
        let cap_us = micros(cap);
        Backoff { base_us: micros(base).min(cap_us), cap_us, attempt: 0, rng }
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        // 2^attempt overflows long before the cap matters, so clamp the shift.
        let factor = 1u64 << self.attempt.min(40);
        Duration::from_micros(self.base_us.saturating_mul(factor).min(self.cap_us))
    }

    /// A random delay in `[0, ceiling]`; the ceiling then doubles.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = micros(self.ceiling());
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_micros(self.rng.u64(0..=ceiling))
    }

    /// Starts again from `base`, after a connection proved stable.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    /// The link's policy: 0.5 s doubling to 30 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded() -> Backoff {
        Backoff::with_rng(Duration::from_millis(500), Duration::from_secs(30), fastrand::Rng::with_seed(7))
    }

    #[test]
    fn ceiling_doubles_to_the_cap() {
        let mut b = seeded();
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay();
        }
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(30), "no overflow after many attempts");
    }

    #[test]
    fn delays_stay_within_bounds() {
        let mut b = seeded();
        for _ in 0..1000 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(d <= ceiling && d <= Duration::from_secs(30), "{d:?} > {ceiling:?}");
        }
    }

    #[test]
    fn delays_grow_on_average() {
        // The mean of many draws at attempt n is about ceiling/2, so it must rise with n.
        let mean_at = |attempt: u32| {
            let mut total = 0u128;
            for seed in 0..400 {
                let mut b = Backoff::with_rng(
                    Duration::from_millis(500),
                    Duration::from_secs(30),
                    fastrand::Rng::with_seed(seed),
                );
                for _ in 0..attempt {
                    b.next_delay();
                }
                total += b.next_delay().as_micros();
            }
            total / 400
        };
        let means: Vec<u128> = (0..7).map(mean_at).collect();
        assert!(means.windows(2).all(|w| w[0] < w[1]), "{means:?}");
        // Full jitter: the mean sits near half the ceiling (500 ms at attempt 0 → ~250 ms).
        assert!((150_000..350_000).contains(&means[0]), "{means:?}");
    }

    #[test]
    fn reset_starts_over() {
        let mut b = seeded();
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(500));
        assert!(b.next_delay() <= Duration::from_millis(500));
    }
}
