//! Usage views: aggregates summed by the dimensions a caller asks for.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::time::{day_of_hour, hour_label, minute_label};
use crate::{Aggregate, Kind, MeteringError, Quantities};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Tenant,
    Model,
    Principal,
    Day,
    Hour,
    /// From the raw events (kept `metering.event_retention_days`), for
    /// short ranges: what a console charts.
    Minute,
}

impl GroupBy {
    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Tenant => "tenant",
            GroupBy::Model => "model",
            GroupBy::Principal => "principal",
            GroupBy::Day => "day",
            GroupBy::Hour => "hour",
            GroupBy::Minute => "minute",
        }
    }
    /// A comma-separated list (`model,day`) of the dimensions `allowed`.
    pub fn parse_list(s: &str, allowed: &[GroupBy]) -> Result<Vec<GroupBy>, MeteringError> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g = allowed
                .iter()
                .copied()
                .find(|g| g.name() == part)
                .ok_or_else(|| {
                    let names: Vec<_> = allowed.iter().map(|g| g.name()).collect();
                    MeteringError::Invalid(format!(
                        "group_by takes {}, not {part:?}",
                        names.join(", ")
                    ))
                })?;
            if !out.contains(&g) {
                out.push(g);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// One row of a usage view: always per kind, then by the asked dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hour: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minute: Option<String>,
    #[serde(flatten)]
    pub quantities: Quantities,
}

pub fn summarize(rows: &[Aggregate], group_by: &[GroupBy]) -> Vec<UsageRow> {
    let has = |g| group_by.contains(&g);
    let mut acc: BTreeMap<(Kind, [Option<String>; 6]), Quantities> = BTreeMap::new();
    for r in rows {
        let key = [
            has(GroupBy::Tenant).then(|| r.tenant.clone()),
            has(GroupBy::Model).then(|| r.model.clone()),
            has(GroupBy::Principal).then(|| r.principal.clone()),
            has(GroupBy::Day).then(|| day_of_hour(r.hour)),
            has(GroupBy::Hour).then(|| hour_label(r.hour)),
            // An hourly sum has no minute: it stays out of a minute view.
            match (has(GroupBy::Minute), r.minute) {
                (true, Some(m)) => Some(minute_label(m)),
                (true, None) => continue,
                (false, _) => None,
            },
        ];
        acc.entry((r.kind, key)).or_default().add(&r.quantities);
    }
    acc.into_iter()
        .map(
            |((kind, [tenant, model, principal, day, hour, minute]), quantities)| UsageRow {
                kind,
                tenant,
                model,
                principal,
                day,
                hour,
                minute,
                quantities,
            },
        )
        .collect()
}

/// A usage view as CSV, with the dimensions asked for first.
pub fn csv(rows: &[UsageRow], group_by: &[GroupBy]) -> String {
    let mut header: Vec<&str> = vec!["kind"];
    header.extend(group_by.iter().map(|g| g.name()));
    header.extend(Quantities::FIELDS);
    let mut out = csv_row(&header);
    for r in rows {
        let mut cells: Vec<String> = vec![r.kind.name().to_owned()];
        for g in group_by {
            let v = match g {
                GroupBy::Tenant => &r.tenant,
                GroupBy::Model => &r.model,
                GroupBy::Principal => &r.principal,
                GroupBy::Day => &r.day,
                GroupBy::Hour => &r.hour,
                GroupBy::Minute => &r.minute,
            };
            cells.push(v.clone().unwrap_or_default());
        }
        cells.extend(r.quantities.values().iter().map(u64::to_string));
        let refs: Vec<&str> = cells.iter().map(String::as_str).collect();
        out.push_str(&csv_row(&refs));
    }
    out
}

/// One CSV row (RFC 4180 quoting where needed).
pub fn csv_row(cells: &[&str]) -> String {
    let quoted: Vec<String> = cells
        .iter()
        .map(|c| {
            if c.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                (*c).to_owned()
            }
        })
        .collect();
    format!("{}\n", quoted.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_group_by_what_is_asked_and_quote_csv() {
        let q = Quantities {
            requests: 1,
            prompt_tokens: 10,
            ..Default::default()
        };
        let row = |model: &str, hour| Aggregate {
            tenant: "a".into(),
            incarnation: "i".into(),
            hour,
            minute: None,
            kind: Kind::Llm,
            model: model.into(),
            principal: "user:x,y".into(),
            tags: Default::default(),
            quantities: q,
        };
        let rows = [row("m1", 0), row("m1", 1), row("m2", 30)];
        // A minute view takes only rows that have a minute (raw events).
        assert!(summarize(&rows, &[GroupBy::Minute]).is_empty());
        let at = |minute| Aggregate {
            minute: Some(minute),
            ..row("m1", minute / 60)
        };
        let minutes = summarize(&[at(61), at(61), at(62)], &[GroupBy::Minute]);
        assert_eq!(minutes.len(), 2);
        assert_eq!(minutes[0].minute.as_deref(), Some("1970-01-01T01:01:00Z"));
        assert_eq!(minutes[0].quantities.requests, 2 * q.requests);
        let by = GroupBy::parse_list("model", &[GroupBy::Model, GroupBy::Day]).unwrap();
        let s = summarize(&rows, &by);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].quantities.requests, 2);
        let by_day = summarize(&rows, &[GroupBy::Day]);
        assert_eq!(
            by_day
                .iter()
                .map(|r| r.day.clone().unwrap())
                .collect::<Vec<_>>(),
            ["1970-01-01", "1970-01-02"]
        );
        assert!(GroupBy::parse_list("tenant", &[GroupBy::Model]).is_err());
        let c = csv(
            &summarize(&rows, &[GroupBy::Principal]),
            &[GroupBy::Principal],
        );
        assert!(c
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("llm,\"user:x,y\",3,30,"));
    }
}
