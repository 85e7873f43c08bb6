//! Error wording shared by the API and the config loader: serde's messages
//! ("unknown variant `x`, expected one of ...", "invalid type: string ...,
//! expected u32") said in plain words, and "did you mean" suggestions.

/// The candidate closest to `word` by edit distance, if it is close enough
/// to be a typo (at most a third of the word's length, and at least 1).
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (distance(&word.to_lowercase(), &c.to_lowercase()), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// The backticked names in a serde list: "`a`, `b` or `c`" → [a, b, c].
pub fn backticked(list: &str) -> Vec<&str> {
    list.split('`').skip(1).step_by(2).collect()
}

/// serde's type names in words.
fn kind(expected: &str) -> String {
    let e = expected.trim();
    match e {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" | "bool" => "true or false".into(),
        "a string" => "a string".into(),
        "a sequence" => "a list".into(),
        "a map" => "an object".into(),
        _ => e.trim_start_matches("struct ").into(),
    }
}

/// One of serde's messages, said plainly; `field` is where it happened
/// (`tier`, `quotas.weight`), if known. Unknown shapes pass unchanged.
pub fn serde_message(field: Option<&str>, raw: &str) -> String {
    let at = |what: String| match field {
        Some(f) if !f.is_empty() && f != "." => format!("`{f}`: {what}"),
        _ => what,
    };
    if let Some(rest) = raw.strip_prefix("unknown variant `") {
        if let Some((value, expected)) = rest.split_once("`, expected ") {
            let allowed = backticked(expected);
            let hint = match did_you_mean(value, &allowed) {
                Some(s) => format!("; did you mean `{s}`?"),
                None => String::new(),
            };
            return at(format!(
                "`{value}` is not allowed; use one of {}{hint}",
                allowed.join(", ")
            ));
        }
    }
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        if let Some((name, expected)) = rest.split_once("`, expected ") {
            let allowed = backticked(expected);
            let hint = match did_you_mean(name, &allowed) {
                Some(s) => format!("did you mean `{s}`? "),
                None => String::new(),
            };
            return at(format!(
                "`{name}` is not a field here; {hint}the fields are {}",
                allowed.join(", ")
            ));
        }
        if let Some(name) = rest.strip_suffix("`, there are no fields") {
            return at(format!("`{name}` is not a field here; none are"));
        }
    }
    if let Some(name) = raw
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        let inner = match field {
            Some(f) if !f.is_empty() && f != "." => format!("{f}.{name}"),
            _ => name.to_owned(),
        };
        return format!("`{inner}` is required");
    }
    if let Some(rest) = raw.strip_prefix("invalid type: ") {
        if let Some((got, expected)) = rest.split_once(", expected ") {
            return at(format!("expected {}, got {got}", kind(expected)));
        }
    }
    if let Some(rest) = raw.strip_prefix("invalid value: ") {
        if let Some((got, expected)) = rest.split_once(", expected ") {
            return at(format!("expected {}, got {got}", kind(expected)));
        }
    }
    // What `str::parse` says inside a query string or an env value.
    match raw {
        "invalid digit found in string" | "cannot parse integer from empty string" => {
            return at("expected a whole number".into())
        }
        "number too large to fit in target type" => return at("the number is too large".into()),
        "invalid float literal" => return at("expected a number".into()),
        "provided string was not `true` or `false`" => return at("expected true or false".into()),
        _ => {}
    }
    at(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_gets_a_suggestion_and_a_stranger_none() {
        assert_eq!(
            did_you_mean("cache_byts", &["cache_bytes", "silo_threads"]),
            Some("cache_bytes")
        );
        assert_eq!(did_you_mean("platinum", &["pool", "bridge", "silo"]), None);
        assert_eq!(
            did_you_mean("sillo", &["pool", "bridge", "silo"]),
            Some("silo")
        );
    }

    #[test]
    fn serde_messages_in_words() {
        assert_eq!(
            serde_message(
                Some("tier"),
                "unknown variant `platinum`, expected one of `pool`, `bridge`, `silo`"
            ),
            "`tier`: `platinum` is not allowed; use one of pool, bridge, silo"
        );
        assert_eq!(
            serde_message(Some("limit"), "invalid digit found in string"),
            "`limit`: expected a whole number"
        );
        assert_eq!(
            serde_message(None, "invalid type: string \"abc\", expected u32"),
            "expected a whole number (0 or more), got string \"abc\""
        );
        assert_eq!(
            serde_message(None, "missing field `id`"),
            "`id` is required"
        );
        assert_eq!(
            serde_message(
                Some("."),
                "unknown field `tenent`, expected one of `id`, `tier`, `tags`"
            ),
            "`tenent` is not a field here; the fields are id, tier, tags"
        );
        assert_eq!(
            serde_message(None, "unknown field `tiers`, expected `id` or `tier`"),
            "`tiers` is not a field here; did you mean `tier`? the fields are id, tier"
        );
    }
}
