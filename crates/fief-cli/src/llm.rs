//! `fief chat` and `fief llm`: a tenant's foundation models over the
//! OpenAI-compatible surface (`/v1/chat/completions`, `/v1/models`).

use std::io::Write;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::CliResult;

#[derive(Args)]
pub struct ChatArgs {
    /// The model, as `fief llm models` lists it.
    pub model: String,
    /// What to ask.
    pub prompt: String,
    /// A system message sent before the prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// The longest answer, in tokens.
    #[arg(long)]
    pub max_tokens: Option<u64>,
    /// Wait for the whole answer instead of printing it as it arrives.
    #[arg(long)]
    pub no_stream: bool,
}

#[derive(Subcommand)]
pub enum LlmCommand {
    /// The foundation models you may call, one per line.
    Models {
        /// The gateway's answer as JSON instead.
        #[arg(long)]
        json: bool,
    },
}

pub async fn llm(c: &Client, command: LlmCommand) -> CliResult {
    match command {
        LlmCommand::Models { json } => {
            let (_, body) = c.send(c.request(Method::GET, "/v1/models")).await?;
            if json {
                crate::print(&body);
            } else {
                for id in model_ids(&body) {
                    crate::outln!("{id}");
                }
            }
        }
    }
    Ok(())
}

pub use fief_verify::model_ids;

pub fn chat_body(args: &ChatArgs) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": args.prompt}));
    let mut body = json!({"model": args.model, "messages": messages, "stream": !args.no_stream});
    if let Some(n) = args.max_tokens {
        body["max_tokens"] = json!(n);
    }
    body
}

pub async fn chat(c: &Client, args: ChatArgs) -> CliResult {
    let req = c
        .request(Method::POST, "/v1/chat/completions")
        .json(&chat_body(&args));
    let mut out = std::io::stdout();
    if args.no_stream {
        let (_, answer) = c.send(req).await?;
        let text = message_text(&answer)
            .ok_or_else(|| format!("the answer holds no message: {answer}"))?;
        writeln!(out, "{text}")?;
        return Ok(());
    }
    let mut resp = c.send_raw(req).await?;
    let streamed = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"));
    if !streamed {
        // A gateway may answer a stream request whole; print it the same.
        let text = resp.text().await.map_err(|e| c.connect(e))?;
        let answer: Value = serde_json::from_str(&text)
            .map_err(|_| format!("the gateway's answer is neither a stream nor JSON: {text}"))?;
        let text = message_text(&answer)
            .ok_or_else(|| format!("the answer holds no message: {answer}"))?;
        writeln!(out, "{text}")?;
        return Ok(());
    }
    let mut printed = false;
    let result = read_stream(&mut resp, |t| {
        printed = true;
        out.write_all(t.as_bytes())?;
        out.flush()
    })
    .await;
    match result {
        Ok(()) => {
            writeln!(out)?;
            Ok(())
        }
        Err(e) => {
            if printed {
                // Ends the partial line on the terminal, but not on stdout:
                // a script must not read a cut answer as a whole one.
                eprintln!();
            }
            Err(e.into())
        }
    }
}

/// Reads a chat stream to its end marker, handing each piece of content to
/// `on_text` as it arrives. An error event, or a stream that ends without
/// the marker, is an error: a cut answer never passes for a whole one.
pub async fn read_stream(
    resp: &mut reqwest::Response,
    mut on_text: impl FnMut(&str) -> std::io::Result<()>,
) -> Result<(), String> {
    let mut events = SseEvents::default();
    loop {
        let chunk = resp
            .chunk()
            .await
            .map_err(|e| format!("the connection broke mid-answer: {e}"))?;
        let Some(chunk) = chunk else {
            return Err(
                "the answer was cut short: the stream ended before its end marker".to_owned(),
            );
        };
        for data in events.push(&chunk) {
            match delta(&data)? {
                Delta::Done => return Ok(()),
                Delta::Text(t) if !t.is_empty() => {
                    on_text(&t).map_err(|e| format!("cannot write the answer: {e}"))?
                }
                Delta::Text(_) => {}
            }
        }
    }
}

/// The text of a whole (non-streamed) chat answer.
fn message_text(answer: &Value) -> Option<String> {
    answer["choices"][0]["message"]["content"]
        .as_str()
        .map(str::to_owned)
}

enum Delta {
    Text(String),
    Done,
}

/// One event's `data`: content to print, the end, or the error the
/// gateway ended the stream with.
fn delta(data: &str) -> Result<Delta, String> {
    if data.trim() == "[DONE]" {
        return Ok(Delta::Done);
    }
    let event: Value = serde_json::from_str(data)
        .map_err(|_| format!("the gateway sent an event that is not JSON: {data}"))?;
    if let Some(err) = event.get("error") {
        let message = err["message"].as_str().unwrap_or("the answer failed");
        let code = err["code"].as_str().unwrap_or("error");
        let request = err["request_id"]
            .as_str()
            .map(|r| format!(" (request {r})"))
            .unwrap_or_default();
        return Err(format!("the answer broke off: {code}: {message}{request}"));
    }
    let text = event["choices"]
        .as_array()
        .map(|choices| {
            choices
                .iter()
                .filter_map(|c| c["delta"]["content"].as_str())
                .collect::<String>()
        })
        .unwrap_or_default();
    Ok(Delta::Text(text))
}

/// Server-sent events split on blank lines; yields each event's `data`
/// (multi-line data joined with `\n`). Bytes are kept until an event is
/// whole, so a chunk boundary inside a UTF-8 character does no harm.
#[derive(Default)]
pub struct SseEvents {
    buf: Vec<u8>,
}

impl SseEvents {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some((end, sep)) = event_end(&self.buf) {
            let raw: Vec<u8> = self.buf.drain(..end + sep).take(end).collect();
            let text = String::from_utf8_lossy(&raw);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                out.push(data.join("\n"));
            }
        }
        out
    }
}

/// Where the first event ends, and the length of the blank line after it.
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn events_split_on_blank_lines_across_chunks() {
        let mut sse = SseEvents::default();
        let text = "data: {\"a\":1}\n\n: comment\n\ndata: x\ndata: y\r\n\r\ndata: [DONE]\n\n";
        let mut got = Vec::new();
        // One byte at a time: every boundary is a chunk boundary.
        for b in text.as_bytes() {
            got.extend(sse.push(std::slice::from_ref(b)));
        }
        assert_eq!(got, vec!["{\"a\":1}", "x\ny", "[DONE]"]);
    }

    #[test]
    fn deltas_and_errors() {
        let d = delta(r#"{"choices":[{"delta":{"content":"hi"}}]}"#).unwrap();
        assert!(matches!(d, Delta::Text(t) if t == "hi"));
        assert!(matches!(delta("[DONE]").unwrap(), Delta::Done));
        let e =
            delta(r#"{"error":{"message":"cut","code":"stream_interrupted","request_id":"r1"}}"#)
                .err()
                .unwrap();
        assert!(
            e.contains("stream_interrupted") && e.contains("cut") && e.contains("r1"),
            "{e}"
        );
    }
}
