//! `fief-llm-mock`: serve the mock upstream until killed; prints the base URL.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use fief_llm_mock::{MockOptions, MockUpstream, TlsFiles};

const USAGE: &str = "usage: fief-llm-mock [--port N] [--name NAME] [--chunks N] \
[--chunk-delay-ms MS] [--delay-ms MS] [--model ID]... [--tls-cert PEM --tls-key PEM]";

fn parse(mut args: impl Iterator<Item = String>) -> Result<(u16, MockOptions), String> {
    let mut port = 0;
    let mut options = MockOptions::default();
    let (mut cert, mut key) = (None, None);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_owned());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--port" => port = value.parse().map_err(|e| format!("--port {value}: {e}"))?,
            "--name" => options.name = value,
            "--chunks" => options.chunks = value.parse().map_err(|e| format!("--chunks: {e}"))?,
            "--chunk-delay-ms" => options.chunk_delay = Duration::from_millis(number(&value)?),
            "--delay-ms" => options.delay = Duration::from_millis(number(&value)?),
            "--model" => options.models.push(value),
            "--tls-cert" => cert = Some(value.into()),
            "--tls-key" => key = Some(value.into()),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    options.tls = match (cert, key) {
        (Some(cert_pem), Some(key_pem)) => Some(TlsFiles { cert_pem, key_pem }),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".to_owned()),
    };
    Ok((port, options))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (port, options) = match parse(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mock = match MockUpstream::start_on(addr, options).await {
        Ok(mock) => mock,
        Err(e) => {
            eprintln!("fief-llm-mock: cannot start on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Scripts read this line to learn the port.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{}", mock.base_url());
    let _ = stdout.flush();
    let _ = tokio::signal::ctrl_c().await;
    mock.stop().await;
    ExitCode::SUCCESS
}
