//! Prices by model and effective date, in integer millionths of the
//! currency, and the one rounding rule: each invoice line is rounded half
//! up to the cent once, from its exact quantity × price; totals are sums
//! of lines.

use fief_config::{parse_date, parse_micros, PriceEntry};
use fief_core::civil;
use serde::Serialize;

use crate::time::days_in_month;
use crate::{Kind, MeteringError, Quantities};

/// What an invoice line counts, and the price field that prices it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    Requests,
    PromptTokens,
    CompletionTokens,
    EmbeddingTokens,
    ComputeSeconds,
    GbMonths,
}

impl Measure {
    pub const ALL: [Measure; 6] = [
        Measure::Requests,
        Measure::PromptTokens,
        Measure::CompletionTokens,
        Measure::EmbeddingTokens,
        Measure::ComputeSeconds,
        Measure::GbMonths,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Measure::Requests => "requests",
            Measure::PromptTokens => "prompt_tokens",
            Measure::CompletionTokens => "completion_tokens",
            Measure::EmbeddingTokens => "embedding_tokens",
            Measure::ComputeSeconds => "compute_seconds",
            Measure::GbMonths => "gb_months",
        }
    }
    /// The unit the price is per.
    pub fn unit(self) -> &'static str {
        match self {
            Measure::Requests => "1,000 requests",
            Measure::PromptTokens | Measure::CompletionTokens | Measure::EmbeddingTokens => {
                "1M tokens"
            }
            Measure::ComputeSeconds => "second",
            Measure::GbMonths => "GB-month",
        }
    }
    fn field(self) -> usize {
        match self {
            Measure::PromptTokens => 0,
            Measure::CompletionTokens => 1,
            Measure::EmbeddingTokens => 2,
            Measure::ComputeSeconds => 3,
            Measure::GbMonths => 4,
            Measure::Requests => 5,
        }
    }
    /// The raw quantity this measure counts (in the units of `divisor`).
    pub fn quantity(self, q: &Quantities) -> u64 {
        match self {
            Measure::Requests => q.requests,
            Measure::PromptTokens => q.prompt_tokens,
            Measure::CompletionTokens => q.completion_tokens,
            Measure::EmbeddingTokens => q.embedding_tokens,
            Measure::ComputeSeconds => q.compute_us,
            Measure::GbMonths => q.byte_days,
        }
    }
    /// How many raw units one priced unit is, for an hour (a GB-month
    /// depends on the month's length).
    pub fn divisor(self, hour: i64) -> u128 {
        match self {
            Measure::Requests => 1_000,
            Measure::PromptTokens | Measure::CompletionTokens | Measure::EmbeddingTokens => {
                1_000_000
            }
            Measure::ComputeSeconds => 1_000_000,
            Measure::GbMonths => 1_000_000_000 * u128::from(days_in_month(hour)),
        }
    }
    /// The measures an operation of `kind` is billed by.
    pub fn of(kind: Kind) -> &'static [Measure] {
        match kind {
            Kind::Llm => &[
                Measure::Requests,
                Measure::PromptTokens,
                Measure::CompletionTokens,
            ],
            Kind::Onnx => &[Measure::Requests, Measure::ComputeSeconds],
            Kind::Embedding | Kind::KbIngest | Kind::KbQuery => {
                &[Measure::Requests, Measure::EmbeddingTokens]
            }
            Kind::Table => &[Measure::Requests],
            Kind::Storage => &[Measure::GbMonths],
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// The first hour it applies to.
    from_hour: i64,
    effective: Option<String>,
    model: Option<String>,
    micros: [Option<u64>; 6],
}

/// The price of a line: millionths per unit, and the entry's date.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price {
    pub micros: u64,
    pub effective: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct PriceBook {
    entries: Vec<Entry>,
}

impl PriceBook {
    pub fn new(entries: &[PriceEntry]) -> Result<PriceBook, MeteringError> {
        let mut out = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let bad = |m: &str| MeteringError::Invalid(format!("pricing[{i}]: {m}"));
            let from_hour = match &e.effective {
                None => i64::MIN,
                Some(d) => {
                    let (y, m, d) = parse_date(d).ok_or_else(|| bad("bad effective date"))?;
                    civil::to_days(y, m, d) * 24
                }
            };
            let mut micros = [None; 6];
            for (slot, (name, v)) in micros.iter_mut().zip(e.prices()) {
                if let Some(v) = v {
                    *slot = Some(parse_micros(v).ok_or_else(|| bad(name))?);
                }
            }
            out.push(Entry {
                from_hour,
                effective: e.effective.clone(),
                model: e.model.clone(),
                micros,
            });
        }
        Ok(PriceBook { entries: out })
    }

    /// The price of `measure` for `model` in `hour`: the latest entry in
    /// force naming the model, else the latest in force naming none.
    pub fn price(&self, model: &str, measure: Measure, hour: i64) -> Option<Price> {
        let field = measure.field();
        let pick = |named: bool| {
            self.entries
                .iter()
                .filter(|e| e.from_hour <= hour && e.micros[field].is_some())
                .filter(|e| match &e.model {
                    Some(m) => named && m == model,
                    None => !named,
                })
                .max_by_key(|e| e.from_hour)
        };
        let e = pick(true).or_else(|| pick(false))?;
        Some(Price {
            micros: e.micros[field]?,
            effective: e.effective.clone(),
        })
    }
}

/// Cents of `quantity` raw units at `micros` per priced unit of `divisor`
/// raw units, rounded half up.
pub fn cents(quantity: u128, micros: u64, divisor: u128) -> u128 {
    let num = quantity * u128::from(micros);
    let den = divisor * 10_000;
    (num + den / 2) / den
}

/// `1234` cents as `"12.34"`.
pub fn money(cents: u128) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Millionths as a decimal without trailing zeros past the cents.
pub fn unit_price(micros: u64) -> String {
    let s = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
    let trimmed = s.trim_end_matches('0');
    let (whole, frac) = trimmed.split_once('.').unwrap_or((trimmed, ""));
    format!("{whole}.{frac:0<2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(effective: Option<&str>, model: Option<&str>, prompt: &str) -> PriceEntry {
        PriceEntry {
            effective: effective.map(Into::into),
            model: model.map(Into::into),
            prompt_per_million: Some(prompt.into()),
            completion_per_million: None,
            embedding_per_million: None,
            compute_second: None,
            gb_month: None,
            per_thousand_requests: None,
        }
    }

    #[test]
    fn the_latest_entry_in_force_prices_and_a_named_model_wins() {
        let book = PriceBook::new(&[
            entry(None, None, "1.00"),
            entry(Some("2026-12-10"), None, "2.00"),
            entry(Some("2026-12-20"), Some("gpt"), "3.00"),
        ])
        .unwrap();
        let dec = |d: u32| civil::to_days(2026, 12, d) * 24;
        let p = |m: &str, h: i64| book.price(m, Measure::PromptTokens, h).unwrap().micros;
        assert_eq!(p("gpt", dec(9) + 23), 1_000_000);
        assert_eq!(p("gpt", dec(10)), 2_000_000);
        assert_eq!(p("gpt", dec(20)), 3_000_000);
        assert_eq!(p("other", dec(20)), 2_000_000);
        assert!(book
            .price("gpt", Measure::CompletionTokens, dec(20))
            .is_none());
    }

    #[test]
    fn rounding_is_half_up_once_per_line() {
        // 1,234,567 tokens at 2.50 per million = 3.0864175 → 3.09
        assert_eq!(cents(1_234_567, 2_500_000, 1_000_000), 309);
        // exactly half a cent rounds up: 5,000 tokens at 1.00 / M = 0.005
        assert_eq!(cents(5_000, 1_000_000, 1_000_000), 1);
        assert_eq!(cents(4_999, 1_000_000, 1_000_000), 0);
        assert_eq!(money(309), "3.09");
        assert_eq!(money(5), "0.05");
        assert_eq!(unit_price(2_500_000), "2.50");
        assert_eq!(unit_price(150_000), "0.15");
        assert_eq!(unit_price(1), "0.000001");
    }
}
