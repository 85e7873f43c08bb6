//! `fief table`: a tenant's small JSON items under (table, key), with
//! compare-and-set by version.

use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use crate::client::{segment, Client};
use crate::{output, CliResult};

#[derive(Subcommand)]
pub enum TableCommand {
    /// Write an item (create or replace).
    Put {
        /// The table.
        table: String,
        /// The item's key (1-1024 bytes).
        key: String,
        /// The value as JSON, `@file` for a file's JSON, or `-` for stdin.
        value: String,
        /// Write only if the item is at this version (compare-and-set; 412 otherwise).
        #[arg(long, value_name = "VERSION", conflicts_with = "if_absent")]
        if_match: Option<u64>,
        /// Write only if no item has this key yet (412 otherwise).
        #[arg(long)]
        if_absent: bool,
    },
    /// Read an item: its value, version and time.
    Get {
        /// The table.
        table: String,
        /// The item's key.
        key: String,
    },
    /// List a table's items in key order, page by page.
    Ls {
        /// The table.
        table: String,
        /// Only keys that start with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Items per page (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Continue from a page's `next_cursor`.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Delete an item.
    Rm {
        /// The table.
        table: String,
        /// The item's key.
        key: String,
        /// Delete only if the item is at this version (412 otherwise).
        #[arg(long, value_name = "VERSION")]
        if_match: Option<u64>,
    },
}

fn item_path(table: &str, key: &str) -> String {
    format!("/api/v1/tables/{}/items/{}", segment(table), segment(key))
}

fn read_value(raw: &str) -> Result<Value, String> {
    let text = if raw == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?
    } else if let Some(path) = raw.strip_prefix('@') {
        std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?
    } else {
        raw.to_owned()
    };
    serde_json::from_str(&text)
        .map_err(|e| format!("the value is not JSON ({e}); a string needs its quotes: '\"text\"'"))
}

pub async fn run(c: &Client, command: TableCommand) -> CliResult {
    match command {
        TableCommand::Put {
            table,
            key,
            value,
            if_match,
            if_absent,
        } => {
            let mut req = c
                .request(Method::PUT, &item_path(&table, &key))
                .json(&read_value(&value)?);
            if let Some(v) = if_match {
                req = req.header(reqwest::header::IF_MATCH, format!("\"{v}\""));
            }
            if if_absent {
                req = req.header(reqwest::header::IF_NONE_MATCH, "*");
            }
            output::show(&c.send(req).await?.1, Some("version"));
        }
        TableCommand::Get { table, key } => output::show(
            &c.send(c.request(Method::GET, &item_path(&table, &key)))
                .await?
                .1,
            Some("value"),
        ),
        TableCommand::Ls {
            table,
            prefix,
            limit,
            cursor,
        } => {
            let mut query = vec![("prefix", prefix), ("limit", limit.to_string())];
            if let Some(cursor) = cursor {
                query.push(("cursor", cursor));
            }
            let req = c
                .request(
                    Method::GET,
                    &format!("/api/v1/tables/{}/items", segment(&table)),
                )
                .query(&query);
            output::show(&c.send(req).await?.1, Some("key"));
        }
        TableCommand::Rm {
            table,
            key,
            if_match,
        } => {
            let mut req = c.request(Method::DELETE, &item_path(&table, &key));
            if let Some(v) = if_match {
                req = req.header(reqwest::header::IF_MATCH, format!("\"{v}\""));
            }
            c.send(req).await?;
            output::say(&format!("item {key} deleted from {table}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_travel_in_one_segment() {
        assert_eq!(item_path("t", "a/b c"), "/api/v1/tables/t/items/a%2Fb%20c");
    }

    #[test]
    fn a_bare_word_is_not_json_and_the_error_says_how() {
        let e = read_value("hello").unwrap_err();
        assert!(e.contains("needs its quotes"), "{e}");
        assert_eq!(read_value("{\"a\": 1}").unwrap(), json!({"a": 1}));
    }
}
