//! Calendar months in UTC, from the Unix clock (no date library needed).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fief_core::civil;

fn unix_secs(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `YYYY-MM` of `at`.
pub fn of(at: SystemTime) -> String {
    let (y, m, _) = civil::from_days(unix_secs(at).div_euclid(86_400));
    format!("{y:04}-{m:02}")
}

pub fn current() -> String {
    of(SystemTime::now())
}

/// Time from `at` until the next month starts (when a budget refills).
pub fn until_next(at: SystemTime) -> Duration {
    let secs = unix_secs(at);
    let (y, m, _) = civil::from_days(secs.div_euclid(86_400));
    let (ny, nm) = civil::next_month(y, m);
    let next = civil::to_days(ny, nm, 1) * 86_400;
    Duration::from_secs((next - secs).max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn months_and_their_ends() {
        assert_eq!(of(at(0)), "1970-01");
        // 2024-02-29T23:59:59Z, a leap day.
        assert_eq!(of(at(1_709_251_199)), "2024-02");
        assert_eq!(until_next(at(1_709_251_199)), Duration::from_secs(1));
        assert_eq!(of(at(1_709_251_200)), "2024-03");
        // 2026-12-31T12:00:00Z: half a day to the new year.
        assert_eq!(of(at(1_798_718_400)), "2026-12");
        assert_eq!(until_next(at(1_798_718_400)), Duration::from_secs(43_200));
    }
}
