//! The generic cell rate algorithm: one number per limit (the theoretical
//! arrival time), so a check is one read and one write, in memory or in a
//! Redis script (`redis.rs` runs the same arithmetic in Lua). Times are
//! microseconds as `f64`: exact for the clock's magnitude (below 2^53), and
//! a fractional interval keeps large token rates exact too.

/// A rate of `limit` units per minute with a burst of `burst_secs` worth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gcra {
    /// Microseconds one unit adds.
    pub interval: f64,
    /// How far ahead of now the arrival time may run: the burst.
    pub tolerance: f64,
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Check {
    /// Admitted: the new arrival time to store, the units left in the
    /// burst and the microseconds until the counter is empty again.
    Admit {
        tat: f64,
        remaining: u64,
        reset: f64,
    },
    /// Refused; admissible after this many microseconds.
    Wait(f64),
    /// The cost alone exceeds the burst: it never fits.
    TooLarge,
}

impl Gcra {
    pub fn per_minute(limit: u64, burst_secs: u64) -> Self {
        let limit = limit.max(1) as f64;
        let interval = 60_000_000.0 / limit;
        // The burst in whole units, at least one.
        let burst = (limit * burst_secs as f64 / 60.0).floor().max(1.0);
        Self {
            interval,
            tolerance: burst * interval,
        }
    }

    /// The burst in units.
    pub fn burst(&self) -> u64 {
        (self.tolerance / self.interval).round() as u64
    }

    /// Whether `cost` units fit at `now` given the stored arrival time.
    pub fn check(&self, tat: Option<f64>, now: f64, cost: u64) -> Check {
        let increment = cost as f64 * self.interval;
        if increment > self.tolerance + 0.5 {
            return Check::TooLarge;
        }
        let tat = tat.unwrap_or(now).max(now);
        let new = tat + increment;
        let ahead = new - now;
        // Half a microsecond of slack absorbs the rounding of the interval.
        if ahead > self.tolerance + 0.5 {
            return Check::Wait(ahead - self.tolerance);
        }
        Check::Admit {
            tat: new,
            remaining: ((self.tolerance - ahead + 0.5) / self.interval)
                .floor()
                .max(0.0) as u64,
            reset: ahead,
        }
    }

    /// The arrival time after `units` reserved earlier went unused (or,
    /// negative, after more than reserved was used).
    pub fn refund(&self, tat: f64, units: i64) -> f64 {
        tat - units as f64 * self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let g = Gcra::per_minute(600, 6); // one per 100 ms, burst 60
        assert_eq!(g.burst(), 60);
        let mut tat = None;
        let mut admitted = 0;
        // 20 s of requests every millisecond.
        for ms in 0..20_000u64 {
            let now = 1e12 + ms as f64 * 1000.0;
            if let Check::Admit { tat: t, .. } = g.check(tat, now, 1) {
                tat = Some(t);
                admitted += 1;
            }
        }
        // 60 at once, then one per 100 ms for 20 s.
        assert!((259..=261).contains(&admitted), "{admitted}");
    }

    #[test]
    fn refusal_says_how_long_to_wait_and_refunds_give_back() {
        let g = Gcra::per_minute(60, 1); // one per second, burst 1
        let now = 5e9;
        let Check::Admit { tat, remaining, .. } = g.check(None, now, 1) else {
            unreachable!()
        };
        assert_eq!(remaining, 0);
        match g.check(Some(tat), now, 1) {
            Check::Wait(us) => assert!((us - 1e6).abs() < 1.0, "{us}"),
            other => unreachable!("{other:?}"),
        }
        let back = g.refund(tat, 1);
        assert!(matches!(g.check(Some(back), now, 1), Check::Admit { .. }));
        assert_eq!(g.check(None, now, 2), Check::TooLarge);
    }

    #[test]
    fn token_costs_count_each_unit() {
        let g = Gcra::per_minute(6000, 60); // 100 tokens/s, burst 6000
        let now = 1e9;
        let Check::Admit { tat, remaining, .. } = g.check(None, now, 5000) else {
            unreachable!()
        };
        assert_eq!(remaining, 1000);
        assert!(matches!(g.check(Some(tat), now, 1001), Check::Wait(_)));
        assert!(matches!(g.check(Some(tat), now, 1000), Check::Admit { .. }));
    }
}
