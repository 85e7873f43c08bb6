//! Hours, days and months as the usage views and invoices name them (UTC).

use fief_core::civil;

use crate::MeteringError;

/// `YYYY-MM` as the range of hours [start, end) it covers.
pub fn month_hours(month: &str) -> Result<(i64, i64), MeteringError> {
    let bad = || MeteringError::Invalid(format!("a month is written YYYY-MM, not {month:?}"));
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let y: i64 = y.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if !(1..=12).contains(&m) {
        return Err(bad());
    }
    let (ny, nm) = civil::next_month(y, m);
    Ok((civil::to_days(y, m, 1) * 24, civil::to_days(ny, nm, 1) * 24))
}

/// A moment written `YYYY-MM-DD` (midnight UTC) or RFC 3339 with `Z`, as
/// Unix seconds.
pub fn parse_instant(s: &str) -> Result<i64, MeteringError> {
    let bad = || {
        MeteringError::Invalid(format!(
            "a time is written YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, not {s:?}"
        ))
    };
    let (date, rest) = match s.split_once('T') {
        Some((d, r)) => (d, Some(r)),
        None => (s, None),
    };
    let (y, m, d) = fief_config::parse_date(date).ok_or_else(bad)?;
    let mut secs = civil::to_days(y, m, d) * 86_400;
    if let Some(rest) = rest {
        let t = rest.strip_suffix('Z').ok_or_else(bad)?;
        let parts: Vec<&str> = t.split(':').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.len() != 2) {
            return Err(bad());
        }
        let n: Vec<i64> = parts
            .iter()
            .map(|p| p.parse::<i64>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        if n[0] > 23 || n[1] > 59 || n[2] > 59 {
            return Err(bad());
        }
        secs += n[0] * 3600 + n[1] * 60 + n[2];
    }
    Ok(secs)
}

/// `YYYY-MM-DD` of an hour.
pub fn day_of_hour(hour: i64) -> String {
    let (y, m, d) = civil::from_days(hour.div_euclid(24));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDTHH:00:00Z` of an hour.
pub fn hour_label(hour: i64) -> String {
    format!("{}T{:02}:00:00Z", day_of_hour(hour), hour.rem_euclid(24))
}

/// `YYYY-MM-DDTHH:MM:00Z` of a minute since the epoch.
pub fn minute_label(minute: i64) -> String {
    let hour = minute.div_euclid(60);
    format!(
        "{}T{:02}:{:02}:00Z",
        day_of_hour(hour),
        hour.rem_euclid(24),
        minute.rem_euclid(60)
    )
}

/// `YYYY-MM` of an hour.
pub fn month_of_hour(hour: i64) -> String {
    let (y, m, _) = civil::from_days(hour.div_euclid(24));
    format!("{y:04}-{m:02}")
}

/// Days in the month an hour falls in.
pub fn days_in_month(hour: i64) -> u64 {
    let (y, m, _) = civil::from_days(hour.div_euclid(24));
    let (ny, nm) = civil::next_month(y, m);
    (civil::to_days(ny, nm, 1) - civil::to_days(y, m, 1)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_days_and_instants() {
        let (start, end) = month_hours("2026-12").unwrap();
        assert_eq!(end - start, 31 * 24);
        assert_eq!(hour_label(start), "2026-12-01T00:00:00Z");
        assert_eq!(month_of_hour(end - 1), "2026-12");
        assert_eq!(days_in_month(month_hours("2024-02").unwrap().0), 29);
        assert_eq!(parse_instant("2026-12-01").unwrap(), start * 3600);
        assert_eq!(
            parse_instant("2026-12-01T01:00:30Z").unwrap(),
            start * 3600 + 3630
        );
        for bad in ["2026-13", "2026-1", "26-12"] {
            assert!(month_hours(bad).is_err());
        }
        for bad in [
            "2026-12-01T01:00Z",
            "2026-12-01T25:00:00Z",
            "2026-12-01 01:00:00",
            "yesterday",
        ] {
            assert!(parse_instant(bad).is_err(), "{bad}");
        }
    }
}
