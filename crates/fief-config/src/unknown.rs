//! Every unknown key of a config file at once, each with its line and a
//! "did you mean" (serde's `deny_unknown_fields` stops at the first).

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

/// One key the configuration does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    /// Where it is: `models.cache_byts`, `llm.upstreams[0].nme`.
    pub path: String,
    pub line: Option<usize>,
    pub suggestion: Option<String>,
}

impl std::fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(f, "unknown key `{}`", self.path)?;
        if let Some(s) = &self.suggestion {
            write!(f, "; did you mean `{s}`?")?;
        }
        Ok(())
    }
}

/// Deserializes `table` as `T` again and again, taking out each unknown
/// key serde names, until none is left.
pub fn find<T: DeserializeOwned>(text: &str, table: &toml::Table) -> Vec<UnknownKey> {
    let mut table = table.clone();
    let mut found = Vec::new();
    // Bounded: each round removes one key.
    for _ in 0..1000 {
        let Err(e) = serde_path_to_error::deserialize::<_, T>(toml::Value::Table(table.clone()))
        else {
            break;
        };
        let message = e.inner().message().to_owned();
        let Some(rest) = message.strip_prefix("unknown field `") else {
            break;
        };
        let Some((name, expected)) = rest.split_once('`') else {
            break;
        };
        let mut parents: Vec<Segment> = e.path().iter().cloned().collect();
        // The path may or may not end at the unknown key itself.
        if matches!(parents.last(), Some(Segment::Map { key }) if key == name) {
            parents.pop();
        }
        if !remove(&mut table, &parents, name) {
            break;
        }
        let allowed = fief_core::words::backticked(expected);
        let mut path = display(&parents);
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(name);
        found.push(UnknownKey {
            line: line_of(text, &parents, name),
            suggestion: fief_core::words::did_you_mean(name, &allowed).map(str::to_owned),
            path,
        });
    }
    found.sort_by_key(|k| k.line);
    found
}

fn display(path: &[Segment]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            _ => {}
        }
    }
    out
}

fn remove(table: &mut toml::Table, path: &[Segment], name: &str) -> bool {
    let mut at = table;
    let mut i = 0;
    while i < path.len() {
        let Segment::Map { key } = &path[i] else {
            return false;
        };
        let next = match at.get_mut(key.as_str()) {
            Some(v) => v,
            None => return false,
        };
        // `key` then an index: an array of tables.
        let next = match (next, path.get(i + 1)) {
            (toml::Value::Array(items), Some(Segment::Seq { index })) => {
                i += 1;
                match items.get_mut(*index) {
                    Some(v) => v,
                    None => return false,
                }
            }
            (v, _) => v,
        };
        match next {
            toml::Value::Table(t) => at = t,
            _ => return false,
        }
        i += 1;
    }
    at.remove(name).is_some()
}

/// The line of `name` under the table header `path` names (`[models]`, the
/// n-th `[[llm.upstreams]]`), else the first line that sets `name`.
fn line_of(text: &str, path: &[Segment], name: &str) -> Option<usize> {
    let mut header = String::new();
    let mut index = None;
    for s in path {
        match s {
            Segment::Map { key } => {
                if !header.is_empty() {
                    header.push('.');
                }
                header.push_str(key);
            }
            Segment::Seq { index: i } => index = Some(*i),
            _ => {}
        }
    }
    let sets = |line: &str| {
        line.trim_start()
            .strip_prefix(name)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    };
    let mut current = String::new();
    let mut seen: usize = 0;
    let mut occurrence = None;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            current = h.trim().to_owned();
            if current == header {
                occurrence = Some(seen);
                seen += 1;
            }
            continue;
        }
        if let Some(h) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            current = h.trim().to_owned();
            occurrence = None;
            continue;
        }
        let here = current == header && (index.is_none() || index == occurrence);
        if here && sets(line) {
            return Some(n + 1);
        }
    }
    text.lines().position(sets).map(|n| n + 1)
}
