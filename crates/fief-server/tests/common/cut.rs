//! Cutting a service off: a relay (`fief_llm_mock::relay`) in front of it,
//! and the URL that goes through the relay.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

use std::net::SocketAddr;

pub use fief_llm_mock::relay::Relay;

/// `url` with its host and port replaced by `addr`.
pub fn through(url: &str, addr: SocketAddr) -> String {
    let mut u = reqwest::Url::parse(url).unwrap();
    u.set_ip_host(addr.ip()).unwrap();
    u.set_port(Some(addr.port())).unwrap();
    u.to_string()
}

/// The host and port `url` names.
pub fn addr_of(url: &str) -> SocketAddr {
    let u = reqwest::Url::parse(url).unwrap();
    let host = u.host_str().unwrap();
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{host}:{}", u.port().unwrap_or(5432))
        .parse()
        .unwrap()
}
