//! The one way fief builds an outgoing HTTP(S) client (upstream LLMs,
//! embedding upstreams, OIDC key sets): rustls, trusting the webpki roots,
//! the system's roots and, when given, a CA file. Redirects are not
//! followed, so a configured URL is the only host a request reaches.

use std::path::Path;
use std::time::Duration;

/// A client with `timeout` for a whole request; `ca_file` is a PEM bundle
/// of extra trusted roots.
pub fn client(ca_file: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_max_idle_per_host(256)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("ca_file {} holds no certificate", path.display()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| format!("TLS client: {e}"))
}

/// The most useful line of a client error: reqwest nests the cause (an
/// untrusted certificate, a refused connection) in its source chain.
pub fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}
