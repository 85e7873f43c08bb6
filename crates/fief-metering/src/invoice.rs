//! Invoices: a month's aggregates priced line by line, per tenant, or per
//! value of one tag (the tag as it was at each request, so a later change
//! does not move past usage between groups).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::pricing::{cents, money, unit_price, Measure, PriceBook};
use crate::{Aggregate, Kind};

/// One line: a measure of one kind and model at one price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub kind: Kind,
    pub model: String,
    pub measure: Measure,
    /// Raw units: requests, tokens, microseconds of compute, byte-days.
    pub quantity: u64,
    pub unit: &'static str,
    /// `None`: no price applies (the line still counts).
    pub unit_price: Option<String>,
    pub effective: Option<String>,
    pub amount: String,
    pub amount_cents: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bill {
    /// The tenant, or the tag value of a group (`(untagged)` when the
    /// request's tenant had no such tag).
    pub name: String,
    /// For a group: the tenants in it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    pub lines: Vec<Line>,
    pub total: String,
    pub total_cents: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invoice {
    pub month: String,
    pub currency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_by_tag: Option<String>,
    pub bills: Vec<Bill>,
    pub total: String,
    pub total_cents: u64,
}

pub const UNTAGGED: &str = "(untagged)";

type LineKey = (Kind, String, Measure, Option<u64>, Option<String>);

/// Prices `rows` (one month's aggregates). Each line of each tenant is
/// rounded once; a tag group's line is the sum of its tenants' lines, so a
/// group's total is exactly the sum of what its tenants are billed.
pub fn build(
    rows: &[Aggregate],
    book: &PriceBook,
    month: &str,
    currency: &str,
    group_by_tag: Option<&str>,
) -> Invoice {
    // (group, tenant) → line key → (quantity, exact numerator by divisor)
    let mut acc: BTreeMap<(String, String), BTreeMap<LineKey, (u128, u128)>> = BTreeMap::new();
    for r in rows {
        let group = match group_by_tag {
            Some(tag) => r.tags.get(tag).cloned().unwrap_or_else(|| UNTAGGED.into()),
            None => r.tenant.clone(),
        };
        let lines = acc.entry((group, r.tenant.clone())).or_default();
        for &m in Measure::of(r.kind) {
            let q = m.quantity(&r.quantities);
            if q == 0 {
                continue;
            }
            let price = book.price(&r.model, m, r.hour);
            let key = (
                r.kind,
                r.model.clone(),
                m,
                price.as_ref().map(|p| p.micros),
                price.and_then(|p| p.effective),
            );
            let e = lines.entry(key).or_insert((0, 0));
            e.0 += u128::from(q);
            // A GB-month's divisor depends on the month, which is the same
            // for every row of one invoice.
            e.1 = m.divisor(r.hour);
        }
    }
    let priced = |key: &LineKey, quantity: u128, divisor: u128| -> Line {
        let c = key.3.map_or(0, |p| cents(quantity, p, divisor));
        Line {
            kind: key.0,
            model: key.1.clone(),
            measure: key.2,
            quantity: u64::try_from(quantity).unwrap_or(u64::MAX),
            unit: key.2.unit(),
            unit_price: key.3.map(unit_price),
            effective: key.4.clone(),
            amount: money(c),
            amount_cents: u64::try_from(c).unwrap_or(u64::MAX),
        }
    };
    let mut bills: BTreeMap<String, (Vec<String>, BTreeMap<LineKey, Line>)> = BTreeMap::new();
    for ((group, tenant), lines) in acc {
        let bill = bills.entry(group).or_default();
        if group_by_tag.is_some() {
            bill.0.push(tenant);
        }
        for (key, (quantity, divisor)) in lines {
            let line = priced(&key, quantity, divisor);
            match bill.1.get_mut(&key) {
                Some(l) => {
                    l.quantity = l.quantity.saturating_add(line.quantity);
                    l.amount_cents = l.amount_cents.saturating_add(line.amount_cents);
                    l.amount = money(u128::from(l.amount_cents));
                }
                None => {
                    bill.1.insert(key, line);
                }
            }
        }
    }
    let bills: Vec<Bill> = bills
        .into_iter()
        .map(|(name, (tenants, lines))| {
            let total: u64 = lines.values().map(|l| l.amount_cents).sum();
            Bill {
                name,
                tenants,
                lines: lines.into_values().collect(),
                total: money(u128::from(total)),
                total_cents: total,
            }
        })
        .collect();
    let total: u64 = bills.iter().map(|b| b.total_cents).sum();
    Invoice {
        month: month.to_owned(),
        currency: currency.to_owned(),
        group_by_tag: group_by_tag.map(Into::into),
        bills,
        total: money(u128::from(total)),
        total_cents: total,
    }
}

/// The invoice as CSV: one row per line.
pub fn csv(invoice: &Invoice) -> String {
    let first = if invoice.group_by_tag.is_some() {
        "group"
    } else {
        "tenant"
    };
    let mut out =
        format!("{first},kind,model,measure,quantity,unit,unit_price,effective,amount,currency\n");
    for b in &invoice.bills {
        for l in &b.lines {
            let row = [
                b.name.as_str(),
                l.kind.name(),
                &l.model,
                l.measure.name(),
                &l.quantity.to_string(),
                l.unit,
                l.unit_price.as_deref().unwrap_or(""),
                l.effective.as_deref().unwrap_or(""),
                &l.amount,
                &invoice.currency,
            ];
            out.push_str(&crate::usage::csv_row(&row));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Quantities;
    use fief_config::PriceEntry;

    fn row(tenant: &str, cc: Option<&str>, hour: i64, kind: Kind, q: Quantities) -> Aggregate {
        Aggregate {
            tenant: tenant.into(),
            incarnation: "i".into(),
            hour,
            minute: None,
            kind,
            model: "gpt".into(),
            principal: "api-key:k".into(),
            tags: cc
                .map(|c| [("CostCenter".to_owned(), c.to_owned())].into())
                .unwrap_or_default(),
            quantities: q,
        }
    }

    #[test]
    fn lines_per_price_version_and_groups_sum_their_tenants() {
        let (start, _) = crate::time::month_hours("2026-12").unwrap();
        let book = PriceBook::new(&[
            PriceEntry {
                effective: None,
                model: Some("gpt".into()),
                prompt_per_million: Some("1.00".into()),
                completion_per_million: Some("2.00".into()),
                embedding_per_million: None,
                compute_second: None,
                gb_month: None,
                per_thousand_requests: None,
            },
            PriceEntry {
                effective: Some("2026-12-15".into()),
                model: Some("gpt".into()),
                prompt_per_million: Some("3.00".into()),
                completion_per_million: None,
                embedding_per_million: None,
                compute_second: None,
                gb_month: None,
                per_thousand_requests: None,
            },
        ])
        .unwrap();
        let q = |p, c| Quantities {
            requests: 1,
            prompt_tokens: p,
            completion_tokens: c,
            ..Default::default()
        };
        let rows = vec![
            row("a", Some("cc1"), start, Kind::Llm, q(1_000_000, 500_000)),
            row(
                "a",
                Some("cc2"),
                start + 20 * 24,
                Kind::Llm,
                q(1_000_000, 0),
            ),
            row("b", Some("cc1"), start, Kind::Llm, q(5_000, 0)),
        ];
        let inv = build(&rows, &book, "2026-12", "USD", None);
        let a = &inv.bills[0];
        assert_eq!(a.name, "a");
        // prompt at 1.00 (1M → 1.00), prompt at 3.00 (1M → 3.00), completion 0.5M at 2.00 → 1.00
        assert_eq!(a.total_cents, 500);
        assert_eq!(inv.bills[1].total_cents, 1); // 5,000 tokens at 1.00/M = 0.005 → 0.01
        assert_eq!(inv.total_cents, 501);
        let by = build(&rows, &book, "2026-12", "USD", Some("CostCenter"));
        let names: Vec<_> = by
            .bills
            .iter()
            .map(|b| (b.name.as_str(), b.total_cents))
            .collect();
        assert_eq!(names, [("cc1", 201), ("cc2", 300)]);
        assert_eq!(by.bills[0].tenants, ["a", "b"]);
        assert_eq!(by.total_cents, inv.total_cents);
        assert!(csv(&by)
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("cc1,llm,gpt,requests,2,"));
    }
}
