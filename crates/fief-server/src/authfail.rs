//! Refused credentials, audited in aggregate (invariant 8 covers every
//! access attempt). Each refusal is counted under (listener, credential
//! kind, source address); once per window the counts become one audit entry
//! each. A window holds at most `MAX_SOURCES` distinct keys; refusals past
//! that are counted under the source `other`, so a flood from many
//! addresses adds a bounded number of entries per window.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use fief_store::CredentialKind;

pub const MAX_SOURCES: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub listener: &'static str,
    pub kind: CredentialKind,
    /// The client address, or `other` once the window is full.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub refused: u64,
    /// The most recent reason, as the client was told it.
    pub reason: String,
}

#[derive(Default)]
pub struct AuthFailures {
    window: Mutex<HashMap<Key, Count>>,
}

impl AuthFailures {
    pub fn record(
        &self,
        listener: &'static str,
        kind: CredentialKind,
        source: Option<SocketAddr>,
        reason: &str,
    ) {
        let Ok(mut window) = self.window.lock() else {
            return;
        };
        let address = source.map_or_else(|| "unknown".to_owned(), |s| ip(s.ip()));
        let mut key = Key {
            listener,
            kind,
            source: address,
        };
        if !window.contains_key(&key) && window.len() >= MAX_SOURCES {
            key.source = "other".into();
        }
        let count = window.entry(key).or_insert_with(|| Count {
            refused: 0,
            reason: String::new(),
        });
        count.refused += 1;
        reason.clone_into(&mut count.reason);
    }

    /// The window's counts, leaving an empty one.
    pub fn take(&self) -> Vec<(Key, Count)> {
        let Ok(mut window) = self.window.lock() else {
            return Vec::new();
        };
        let mut all: Vec<_> = window.drain().collect();
        all.sort_by(|a, b| {
            (a.0.listener, a.0.kind.as_str(), &a.0.source).cmp(&(
                b.0.listener,
                b.0.kind.as_str(),
                &b.0.source,
            ))
        });
        all
    }
}

/// An IPv4-mapped IPv6 address reads as the IPv4 one.
fn ip(addr: IpAddr) -> String {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_aggregated_and_bounded() {
        let f = AuthFailures::default();
        let a: SocketAddr = "10.0.0.1:1234".parse().unwrap();
        for _ in 0..500 {
            f.record("data", CredentialKind::ApiKey, Some(a), "invalid");
        }
        f.record("data", CredentialKind::Jwt, Some(a), "expired");
        for i in 0..5000u32 {
            let b = SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 80));
            f.record(
                "admin",
                CredentialKind::AdminToken,
                Some(b),
                "invalid admin token",
            );
        }
        let counts = f.take();
        assert_eq!(counts.len(), MAX_SOURCES + 1, "bounded per window");
        let total: u64 = counts.iter().map(|(_, c)| c.refused).sum();
        assert_eq!(total, 5501, "every refusal counted");
        let key = |listener, kind, source: &str| Key {
            listener,
            kind,
            source: source.into(),
        };
        let of = |k: &Key| {
            counts
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, c)| c.refused)
        };
        assert_eq!(
            of(&key("data", CredentialKind::ApiKey, "10.0.0.1")),
            Some(500)
        );
        assert_eq!(of(&key("data", CredentialKind::Jwt, "10.0.0.1")), Some(1));
        assert_eq!(
            of(&key("admin", CredentialKind::AdminToken, "other")),
            Some(5000 - (MAX_SOURCES as u64 - 2))
        );
        assert!(f.take().is_empty());
    }
}
