//! Metadata filters of a query: parsed once from the client's JSON into an
//! expression, then evaluated on each opened chunk's metadata. Pure.
//!
//! The shapes (all may nest, at most [`MAX_DEPTH`] deep and
//! [`MAX_CLAUSES`] conditions in all):
//! - `{"team": "ops"}`: equality; `{"team": ["ops", "sre"]}`: any of them
//!   (the first shape fief had, kept as it was);
//! - `{"year": {"gte": 2020, "lt": 2025}}`: operators on one key, all of
//!   which must hold: `eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `in`, `not_in`,
//!   `starts_with`, `contains`;
//! - `{"and": [f, …]}`, `{"or": [f, …]}`: combinations; the keys of one
//!   object must all hold.
//!
//! A missing key fails every condition on it but `ne` and `not_in`.
//! Ordering compares numbers with numbers and strings with strings (ISO
//! dates order as text); any other pairing is false. No key, at any depth,
//! may name a tenant: a query searches the caller's own tenant only.

use serde_json::{Map, Value};

use crate::{check_scalar, names_a_tenant, KnowledgeError, Result};

pub const MAX_DEPTH: usize = 8;
pub const MAX_CLAUSES: usize = 100;
/// Values one `in` / `not_in` list (or an any-of array) holds at most.
pub const MAX_LIST: usize = 100;

const OPERATORS: [&str; 10] = [
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "not_in",
    "starts_with",
    "contains",
];

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Always true (the empty filter).
    All,
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Cond {
        key: String,
        op: Op,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq(Value),
    Ne(Value),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    StartsWith(String),
    Contains(String),
}

fn invalid(msg: String) -> KnowledgeError {
    KnowledgeError::Validation(msg)
}

struct Parser {
    clauses: usize,
}

impl Filter {
    /// The filter a query's `filter` object says.
    pub fn parse(filter: &Map<String, Value>) -> Result<Filter> {
        let mut p = Parser { clauses: 0 };
        p.object(filter, 1)
    }

    pub fn is_all(&self) -> bool {
        *self == Filter::All
    }

    pub fn matches(&self, metadata: &Map<String, Value>) -> bool {
        match self {
            Filter::All => true,
            Filter::And(all) => all.iter().all(|f| f.matches(metadata)),
            Filter::Or(any) => any.iter().any(|f| f.matches(metadata)),
            Filter::Cond { key, op } => op.holds(metadata.get(key)),
        }
    }
}

impl Parser {
    fn object(&mut self, filter: &Map<String, Value>, depth: usize) -> Result<Filter> {
        if depth > MAX_DEPTH {
            return Err(invalid(format!(
                "filter: nested more than {MAX_DEPTH} deep"
            )));
        }
        let mut all = Vec::new();
        for (key, value) in filter {
            match key.as_str() {
                "and" | "or" => {
                    let parts = match value {
                        Value::Array(parts) if !parts.is_empty() => parts,
                        _ => {
                            return Err(invalid(format!(
                                "filter `{key}` takes a non-empty list of filters"
                            )))
                        }
                    };
                    let mut out = Vec::new();
                    for part in parts {
                        let Value::Object(part) = part else {
                            return Err(invalid(format!(
                                "filter `{key}`: each item is a filter object, like {{\"team\": \"ops\"}}"
                            )));
                        };
                        out.push(self.object(part, depth + 1)?);
                    }
                    all.push(if key == "and" {
                        Filter::And(out)
                    } else {
                        Filter::Or(out)
                    });
                }
                _ => all.extend(self.key(key, value)?),
            }
        }
        Ok(match all.len() {
            0 => Filter::All,
            1 => all.pop().unwrap_or(Filter::All),
            _ => Filter::And(all),
        })
    }

    fn count(&mut self) -> Result<()> {
        self.clauses += 1;
        if self.clauses > MAX_CLAUSES {
            return Err(invalid(format!(
                "filter: more than {MAX_CLAUSES} conditions"
            )));
        }
        Ok(())
    }

    /// The conditions on one metadata key.
    fn key(&mut self, key: &str, value: &Value) -> Result<Vec<Filter>> {
        if names_a_tenant(key) {
            return Err(invalid(format!(
                "filter key `{key}` names a tenant; a query only ever searches the caller's own \
                 tenant, so the tenant cannot be filtered on"
            )));
        }
        let cond = |op| Filter::Cond {
            key: key.to_owned(),
            op,
        };
        match value {
            Value::Object(ops) if ops.is_empty() => Err(invalid(format!(
                "filter `{key}`: an operator object needs at least one of {}",
                OPERATORS.join(", ")
            ))),
            Value::Object(ops) => {
                let mut out = Vec::new();
                for (name, arg) in ops {
                    self.count()?;
                    out.push(cond(operator(key, name, arg)?));
                }
                Ok(out)
            }
            Value::Array(items) => {
                self.count()?;
                Ok(vec![cond(Op::In(list(key, "a list", items)?))])
            }
            scalar => {
                self.count()?;
                check_scalar(key, scalar)?;
                Ok(vec![cond(Op::Eq(scalar.clone()))])
            }
        }
    }
}

fn list(key: &str, what: &str, items: &[Value]) -> Result<Vec<Value>> {
    if items.is_empty() || items.len() > MAX_LIST {
        return Err(invalid(format!(
            "filter `{key}`: {what} must hold 1-{MAX_LIST} values"
        )));
    }
    for item in items {
        check_scalar(key, item)?;
    }
    Ok(items.to_vec())
}

fn operator(key: &str, name: &str, arg: &Value) -> Result<Op> {
    let scalar = || -> Result<Value> {
        check_scalar(key, arg)?;
        Ok(arg.clone())
    };
    let ordered = || -> Result<Value> {
        match arg {
            Value::Number(_) => Ok(arg.clone()),
            Value::String(_) => scalar(),
            _ => Err(invalid(format!(
                "filter `{key}`: `{name}` compares with a number or a string"
            ))),
        }
    };
    let text = || -> Result<String> {
        match arg {
            Value::String(s) if !s.is_empty() && s.len() <= 1024 => Ok(s.clone()),
            _ => Err(invalid(format!(
                "filter `{key}`: `{name}` takes a string of 1-1024 bytes"
            ))),
        }
    };
    let items = || -> Result<Vec<Value>> {
        match arg {
            Value::Array(items) => list(key, &format!("`{name}`"), items),
            _ => Err(invalid(format!(
                "filter `{key}`: `{name}` takes a list of values"
            ))),
        }
    };
    Ok(match name {
        "eq" => Op::Eq(scalar()?),
        "ne" => Op::Ne(scalar()?),
        "gt" => Op::Gt(ordered()?),
        "gte" => Op::Gte(ordered()?),
        "lt" => Op::Lt(ordered()?),
        "lte" => Op::Lte(ordered()?),
        "in" => Op::In(items()?),
        "not_in" => Op::NotIn(items()?),
        "starts_with" => Op::StartsWith(text()?),
        "contains" => Op::Contains(text()?),
        other => {
            let hint = fief_core::words::did_you_mean(other, &OPERATORS)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(invalid(format!(
                "filter `{key}`: unknown operator `{other}`{hint}; use one of {}",
                OPERATORS.join(", ")
            )));
        }
    })
}

/// Numbers compare as numbers (1 == 1.0), everything else as JSON values.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn order(have: &Value, want: &Value) -> Option<std::cmp::Ordering> {
    match (have, want) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl Op {
    fn holds(&self, have: Option<&Value>) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let Some(have) = have else {
            return matches!(self, Op::Ne(_) | Op::NotIn(_));
        };
        match self {
            Op::Eq(v) => same(have, v),
            Op::Ne(v) => !same(have, v),
            Op::Gt(v) => order(have, v) == Some(Greater),
            Op::Gte(v) => matches!(order(have, v), Some(Greater | Equal)),
            Op::Lt(v) => order(have, v) == Some(Less),
            Op::Lte(v) => matches!(order(have, v), Some(Less | Equal)),
            Op::In(vs) => vs.iter().any(|v| same(have, v)),
            Op::NotIn(vs) => !vs.iter().any(|v| same(have, v)),
            Op::StartsWith(p) => have.as_str().is_some_and(|s| s.starts_with(p.as_str())),
            Op::Contains(p) => have.as_str().is_some_and(|s| s.contains(p.as_str())),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn f(v: Value) -> Result<Filter> {
        Filter::parse(v.as_object().unwrap())
    }

    fn meta(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_first_shape_still_means_equality_or_any_of() {
        let m = meta(json!({"team": "ops", "year": 2024}));
        assert!(f(json!({})).unwrap().is_all());
        assert!(f(json!({"team": "ops"})).unwrap().matches(&m));
        assert!(f(json!({"team": ["sre", "ops"]})).unwrap().matches(&m));
        assert!(!f(json!({"team": "sre"})).unwrap().matches(&m));
        assert!(f(json!({"team": "ops", "year": 2024.0}))
            .unwrap()
            .matches(&m));
        assert!(!f(json!({"team": "ops", "year": 2023})).unwrap().matches(&m));
        assert!(!f(json!({"missing": "x"})).unwrap().matches(&m));
    }

    #[test]
    fn every_operator_on_numbers_strings_and_missing_keys() {
        let m =
            meta(json!({"year": 2024, "code": "INV-2024-007", "date": "2024-03-05", "ok": true}));
        let yes = [
            json!({"year": {"eq": 2024}}),
            json!({"year": {"ne": 2023}}),
            json!({"year": {"gt": 2023}}),
            json!({"year": {"gte": 2024, "lte": 2024}}),
            json!({"year": {"lt": 2024.5}}),
            json!({"year": {"in": [1, 2024]}}),
            json!({"year": {"not_in": [1, 2]}}),
            json!({"code": {"starts_with": "INV-"}}),
            json!({"code": {"contains": "-007"}}),
            json!({"date": {"gte": "2024-01-01", "lt": "2024-04-01"}}),
            json!({"ok": {"eq": true}}),
            json!({"missing": {"ne": 1}}),
            json!({"missing": {"not_in": [1]}}),
        ];
        for y in yes {
            assert!(f(y.clone()).unwrap().matches(&m), "{y}");
        }
        let no = [
            json!({"year": {"ne": 2024}}),
            json!({"year": {"gt": 2024}}),
            json!({"year": {"lt": 2024}}),
            json!({"year": {"gte": 2020, "lt": 2021}}),
            json!({"year": {"not_in": [2024]}}),
            json!({"year": {"gt": "2000"}}),
            json!({"year": {"starts_with": "20"}}),
            json!({"code": {"starts_with": "inv"}}),
            json!({"code": {"gt": 5}}),
            json!({"missing": {"eq": 1}}),
            json!({"missing": {"lt": 1}}),
            json!({"missing": {"contains": "x"}}),
        ];
        for n in no {
            assert!(!f(n.clone()).unwrap().matches(&m), "{n}");
        }
    }

    #[test]
    fn and_or_nest() {
        let m = meta(json!({"team": "ops", "year": 2024}));
        let either = json!({"or": [{"team": "sre"}, {"year": {"gte": 2024}}]});
        assert!(f(either).unwrap().matches(&m));
        let both = json!({"and": [{"team": "sre"}, {"year": {"gte": 2024}}]});
        assert!(!f(both).unwrap().matches(&m));
        let nested = json!({"team": "ops", "or": [{"and": [{"year": 1}, {"team": "ops"}]}, {"year": {"in": [2024]}}]});
        assert!(f(nested).unwrap().matches(&m));
    }

    #[test]
    fn bad_filters_are_refused_in_words() {
        let cases = [
            (json!({"tenant": "x"}), "names a tenant"),
            (json!({"or": [{"TenantId": {"eq": "x"}}]}), "names a tenant"),
            (
                json!({"and": [{"a": 1}, {"or": [{"x_tenant": 1}]}]}),
                "names a tenant",
            ),
            (json!({"year": {"gte_": 1}}), "did you mean `gte`"),
            (json!({"year": {}}), "needs at least one"),
            (json!({"year": {"gt": true}}), "number or a string"),
            (json!({"year": {"in": 3}}), "list of values"),
            (json!({"year": {"in": []}}), "1-100"),
            (json!({"year": []}), "1-100"),
            (json!({"code": {"starts_with": 3}}), "string of 1-1024"),
            (json!({"code": {"eq": {"a": 1}}}), "must be a string"),
            (json!({"or": []}), "non-empty list"),
            (json!({"or": [3]}), "filter object"),
            (json!({"and": {"a": 1}}), "non-empty list"),
        ];
        for (filter, needle) in cases {
            let e = f(filter.clone()).unwrap_err().to_string();
            assert!(e.contains(needle), "{filter}: {e}");
        }
        let mut deep = json!({"a": 1});
        for _ in 0..MAX_DEPTH {
            deep = json!({ "and": [deep] });
        }
        assert!(f(deep).unwrap_err().to_string().contains("deep"));
        let many: Map<String, Value> = (0..=MAX_CLAUSES)
            .map(|i| (format!("k{i}"), json!(i)))
            .collect();
        assert!(Filter::parse(&many)
            .unwrap_err()
            .to_string()
            .contains("conditions"));
    }
}
