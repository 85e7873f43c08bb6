//! `[metering]` (usage events, currency, retention) and `[[pricing]]`
//! (prices by model and effective date).

use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeteringConfig {
    /// Off: no usage events are written (and invoices are empty).
    pub enabled: bool,
    /// The currency prices are written in (shown on invoices only).
    pub currency: String,
    /// Raw usage events older than this many days are deleted; the hourly
    /// aggregates invoices read are kept.
    pub event_retention_days: u32,
    /// Most events written in one transaction by the group writer.
    pub batch_max: usize,
}

impl Default for MeteringConfig {
    fn default() -> Self {
        MeteringConfig {
            enabled: true,
            currency: "USD".into(),
            event_retention_days: 90,
            batch_max: 256,
        }
    }
}

/// One price entry. Prices are decimal strings (at most six decimals) so
/// no float ever touches money. An entry applies from its `effective` date
/// (UTC midnight) until the next entry for the same model; an entry
/// without `model` prices every model no entry of its own prices. A price
/// change is a new entry with a later date: the past keeps its price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    /// `YYYY-MM-DD`; absent: since always.
    #[serde(default)]
    pub effective: Option<String>,
    /// A foundation-model or ONNX model name, or an embedding model name.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub prompt_per_million: Option<String>,
    #[serde(default)]
    pub completion_per_million: Option<String>,
    #[serde(default)]
    pub embedding_per_million: Option<String>,
    /// Per second of ONNX run time.
    #[serde(default)]
    pub compute_second: Option<String>,
    /// Per gigabyte (10^9 bytes) held for a month, sampled daily.
    #[serde(default)]
    pub gb_month: Option<String>,
    /// Per thousand requests (knowledge-base queries, table operations, …).
    #[serde(default)]
    pub per_thousand_requests: Option<String>,
}

impl PriceEntry {
    pub fn prices(&self) -> [(&'static str, Option<&str>); 6] {
        [
            ("prompt_per_million", self.prompt_per_million.as_deref()),
            (
                "completion_per_million",
                self.completion_per_million.as_deref(),
            ),
            (
                "embedding_per_million",
                self.embedding_per_million.as_deref(),
            ),
            ("compute_second", self.compute_second.as_deref()),
            ("gb_month", self.gb_month.as_deref()),
            (
                "per_thousand_requests",
                self.per_thousand_requests.as_deref(),
            ),
        ]
    }
}

/// A decimal amount (`"2.50"`) in millionths of the currency unit.
pub fn parse_micros(s: &str) -> Option<u64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || frac.len() > 6 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (s.contains('.') && frac.is_empty()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let frac: u64 = format!("{frac:0<6}").parse().ok()?;
    whole.checked_mul(1_000_000)?.checked_add(frac)
}

/// `YYYY-MM-DD` as (year, month, day), checked.
pub fn parse_date(s: &str) -> Option<(i64, u32, u32)> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year: i64 = s.get(0..4)?.parse().ok()?;
    let month: u32 = s.get(5..7)?.parse().ok()?;
    let day: u32 = s.get(8..10)?.parse().ok()?;
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    (1..=days).contains(&day).then_some((year, month, day))
}

impl MeteringConfig {
    pub(crate) fn validate(&self, pricing: &[PriceEntry]) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.currency.is_empty() || self.currency.len() > 8 {
            return invalid("metering.currency must be 1 to 8 characters".into());
        }
        if self.event_retention_days == 0 {
            return invalid("metering.event_retention_days must be at least 1".into());
        }
        if !(1..=10_000).contains(&self.batch_max) {
            return invalid("metering.batch_max must be between 1 and 10000".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, p) in pricing.iter().enumerate() {
            let at = format!("pricing[{i}]");
            if let Some(d) = &p.effective {
                if parse_date(d).is_none() {
                    return invalid(format!(
                        "{at}.effective must be a date YYYY-MM-DD, not {d:?}"
                    ));
                }
            }
            if p.model.as_deref() == Some("") {
                return invalid(format!(
                    "{at}.model must not be empty (leave it out to price every model)"
                ));
            }
            let mut any = false;
            for (name, value) in p.prices() {
                if let Some(v) = value {
                    any = true;
                    if parse_micros(v).is_none() {
                        return invalid(format!(
                            "{at}.{name} must be a decimal string with at most six decimals, like \"2.50\", not {v:?}"
                        ));
                    }
                }
            }
            if !any {
                return invalid(format!("{at} sets no price"));
            }
            if !seen.insert((p.model.clone(), p.effective.clone())) {
                return invalid(format!(
                    "{at} repeats the model and effective date of an earlier entry; a price change is an entry with a later date"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_parsed_exactly() {
        assert_eq!(parse_micros("2.50"), Some(2_500_000));
        assert_eq!(parse_micros("0.000001"), Some(1));
        assert_eq!(parse_micros("15"), Some(15_000_000));
        for bad in ["", ".5", "1.", "1.0000001", "-1", "1e3", "1,5", " 1"] {
            assert_eq!(parse_micros(bad), None, "{bad}");
        }
    }

    #[test]
    fn dates_are_checked() {
        assert_eq!(parse_date("2026-12-01"), Some((2026, 12, 1)));
        assert_eq!(parse_date("2024-02-29"), Some((2024, 2, 29)));
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-1-01",
            "20261201",
            "2026-12-00",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }
}
