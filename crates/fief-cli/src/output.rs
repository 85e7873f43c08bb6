//! What the CLI prints: a table for people on a terminal, JSON when piped
//! (or `--output json`), and with `--quiet` only the value a script wants
//! (a key, an id). Every line goes through [`line`], so a closed stdout
//! (`fief … | head -1`) ends the command quietly instead of panicking.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns for people (the default on a terminal).
    Table,
    /// The server's JSON, pretty-printed (the default when piped).
    Json,
}

#[derive(Clone, Copy, Debug)]
pub struct Mode {
    pub format: Format,
    pub quiet: bool,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// Chooses the output once, from the flags and whether stdout is a terminal.
pub fn init(format: Option<Format>, quiet: bool) {
    let format = format.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Json
    });
    let _ = MODE.set(Mode { format, quiet });
}

pub fn mode() -> Mode {
    MODE.get().copied().unwrap_or(Mode {
        format: Format::Json,
        quiet: false,
    })
}

/// Writes one line to stdout. A reader that went away (broken pipe) ends
/// the process with success: it has read all it wanted.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// `println!` through [`line`].
#[macro_export]
macro_rules! outln {
    () => { $crate::output::line("") };
    ($($arg:tt)*) => { $crate::output::line(&format!($($arg)*)) };
}

/// A message for people (`model m deleted`); nothing with `--quiet`.
pub fn say(text: &str) {
    if !mode().quiet {
        line(text);
    }
}

/// An answer: its `essential` field alone with `--quiet` (for a list, that
/// field of every row), else the table or the JSON.
pub fn show(v: &Value, essential: Option<&str>) {
    let m = mode();
    if m.quiet {
        if let Some(field) = essential {
            for value in essentials(v, field) {
                line(&value);
            }
            return;
        }
    }
    match m.format {
        Format::Json => line(&serde_json::to_string_pretty(v).unwrap_or_default()),
        Format::Table => line(&render(v)),
    }
}

/// The values of `field` in `v`: the field itself, or that field of each
/// row of the list `v` holds.
fn essentials(v: &Value, field: &str) -> Vec<String> {
    if let Some(x) = lookup(v, field) {
        return vec![scalar(x)];
    }
    rows(v)
        .map(|rows| {
            rows.iter()
                .filter_map(|r| lookup(r, field))
                .map(scalar)
                .collect()
        })
        .unwrap_or_default()
}

/// `a.b` paths into objects.
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .filter(|x| !x.is_null())
}

/// The list an answer is about: itself, or its one array of objects
/// (`{"models": [...]}`, `{"items": [...], "next_cursor"}`).
fn rows(v: &Value) -> Option<&Vec<Value>> {
    match v {
        Value::Array(a) => Some(a),
        Value::Object(o) => {
            let mut lists = o
                .values()
                .filter_map(|x| x.as_array())
                .filter(|a| a.iter().all(Value::is_object));
            let first = lists.next()?;
            lists.next().is_none().then_some(first)
        }
        _ => None,
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A cell: scalars as they are, nested values as compact JSON, cut at 60
/// characters.
fn cell(v: &Value) -> String {
    let s = scalar(v);
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// People's view of an answer: a list as columns, an object as `key  value`
/// lines (an object holding one list: its other fields, then the list).
pub fn render(v: &Value) -> String {
    match v {
        Value::Array(a) => table(a),
        Value::Object(o) => {
            let list = rows(v);
            let mut out = Vec::new();
            let width = o.keys().map(|k| k.chars().count()).max().unwrap_or(0);
            for (k, x) in o {
                if list.is_some_and(|l| x.as_array() == Some(l)) {
                    continue;
                }
                if x.is_null() {
                    continue;
                }
                // An object's field in full (not cut): people asked for this one thing.
                out.push(format!("{k:width$}  {}", scalar(x)));
            }
            if let Some(l) = list {
                if !out.is_empty() {
                    out.push(String::new());
                }
                out.push(table(l));
            }
            out.join("\n")
        }
        other => scalar(other),
    }
}

fn table(rows: &[Value]) -> String {
    if rows.is_empty() {
        return "(none)".into();
    }
    // Columns in the order the first row names them, then any others.
    let mut columns: Vec<String> = Vec::new();
    for r in rows {
        if let Some(o) = r.as_object() {
            for k in o.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
    }
    if columns.is_empty() {
        return rows.iter().map(cell).collect::<Vec<_>>().join("\n");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| r.get(c).map(cell).unwrap_or_default())
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let fmt_row = |row: Vec<String>| {
        row.iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let header = fmt_row(columns.iter().map(|c| c.to_uppercase()).collect());
    std::iter::once(header)
        .chain(cells.into_iter().map(fmt_row))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_answer_is_a_table_with_every_column() {
        let v = json!({"models": [{"name": "a", "bytes": 10}, {"name": "bb", "version": 2}]});
        let t = render(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "NAME  BYTES  VERSION");
        assert_eq!(lines[1], "a     10");
        assert_eq!(lines[2], "bb           2");
    }

    #[test]
    fn an_object_is_key_value_lines_and_its_list_below() {
        let v = json!({"items": [{"key": "k"}], "next_cursor": "c"});
        assert_eq!(render(&v), "next_cursor  c\n\nKEY\nk");
    }

    #[test]
    fn quiet_takes_the_field_or_each_rows_field() {
        assert_eq!(
            essentials(&json!({"api_key": "fief_x"}), "api_key"),
            ["fief_x"]
        );
        assert_eq!(
            essentials(&json!({"tenant": {"id": "hr"}}), "tenant.id"),
            ["hr"]
        );
        assert_eq!(
            essentials(&json!({"tenants": [{"id": "a"}, {"id": "b"}]}), "id"),
            ["a", "b"]
        );
    }

    #[test]
    fn long_cells_are_cut() {
        let long = "x".repeat(100);
        let t = table(&[json!({ "v": long })]);
        assert!(t
            .lines()
            .nth(1)
            .is_some_and(|l| l.ends_with("...") && l.len() == 60));
    }
}
