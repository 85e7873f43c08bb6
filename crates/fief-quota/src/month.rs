//! Calendar months in UTC, from the Unix clock (no date library needed).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// (year, month) of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// Days from 1970-01-01 to the first of `month` of `year`.
fn days_from_civil(year: i64, month: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn unix_secs(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `YYYY-MM` of `at`.
pub fn of(at: SystemTime) -> String {
    let (y, m) = civil(unix_secs(at).div_euclid(86_400));
    format!("{y:04}-{m:02}")
}

pub fn current() -> String {
    of(SystemTime::now())
}

/// Time from `at` until the next month starts (when a budget refills).
pub fn until_next(at: SystemTime) -> Duration {
    let secs = unix_secs(at);
    let (y, m) = civil(secs.div_euclid(86_400));
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let next = days_from_civil(ny, nm) * 86_400;
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
