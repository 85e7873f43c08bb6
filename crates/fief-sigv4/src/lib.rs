//! AWS Signature Version 4, the verifying side: what the AWS SDKs sign
//! (`Authorization: AWS4-HMAC-SHA256 Credential=.../date/region/service/aws4_request,
//! SignedHeaders=..., Signature=...`), rebuilt from the request as received.
//!
//! Pure and synchronous: the HTTP edge hands over the method, the raw path
//! and query, the headers and the body's SHA-256; the key store derives the
//! signing key from the credential's sealed secret. Nothing here knows
//! tenants. The canonical form follows botocore's `SigV4Auth` (the client
//! fief must agree with byte for byte): the path is normalised and encoded
//! once more, query pairs sorted as sent, header values trimmed and their
//! inner runs of spaces collapsed.

use ring::hmac;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's `X-Amz-Date` may be from the server's clock, either
/// way (AWS's own window): an older signature is a replay.
pub const WINDOW_SECS: i64 = 15 * 60;

/// Why a signed request is refused. Each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    #[error("malformed AWS4-HMAC-SHA256 Authorization header: {0}")]
    Malformed(String),
    #[error("missing X-Amz-Date header (the SDKs send it; the signature covers it)")]
    MissingDate,
    #[error("X-Amz-Date {0:?} is not of the form YYYYMMDDTHHMMSSZ")]
    BadDate(String),
    #[error("the credential scope's date {scope} is not the day of X-Amz-Date {amz_date}")]
    ScopeDate { scope: String, amz_date: String },
    #[error("the request was signed at {amz_date}, {skew_secs} s from the server's clock (at most {WINDOW_SECS} s either way): a replayed or mis-dated request")]
    Expired { amz_date: String, skew_secs: i64 },
    #[error("SignedHeaders must include {0}")]
    UnsignedHeader(&'static str),
    #[error("signed header {0} is not in the request")]
    MissingHeader(String),
    #[error("X-Amz-Content-SHA256 does not match the body's SHA-256")]
    PayloadHash,
    #[error("an unsigned payload is not accepted: sign the body")]
    UnsignedPayload,
    #[error("the signature does not match (wrong secret access key, or the request was altered)")]
    Mismatch,
}

/// The parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD`.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lower-case names, in the order given (AWS requires them sorted).
    pub signed_headers: Vec<String>,
    pub signature: [u8; 32],
}

impl Authorization {
    /// `date/region/service/aws4_request`.
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// Whether an `Authorization` value claims to be SigV4 (then it must verify).
pub fn is_sigv4(authorization: &str) -> bool {
    authorization
        .strip_prefix(ALGORITHM)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
}

fn malformed(m: impl Into<String>) -> SigV4Error {
    SigV4Error::Malformed(m.into())
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/20261204/us-east-1/sagemaker/aws4_request,
/// SignedHeaders=host;x-amz-date, Signature=<64 hex>`.
pub fn parse_authorization(value: &str) -> Result<Authorization, SigV4Error> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| malformed(format!("expected it to start with `{ALGORITHM} `")))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| malformed(format!("expected key=value, got {:?}", part.trim())))?;
        let slot = match k {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            other => return Err(malformed(format!("unknown component {other:?}"))),
        };
        if slot.replace(v).is_some() {
            return Err(malformed(format!("{k} given twice")));
        }
    }
    let credential = credential.ok_or_else(|| malformed("no Credential"))?;
    let signed = signed.ok_or_else(|| malformed("no SignedHeaders"))?;
    let signature = signature.ok_or_else(|| malformed("no Signature"))?;
    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = parts[..] else {
        return Err(malformed(
            "Credential must be <access key id>/<YYYYMMDD>/<region>/<service>/aws4_request",
        ));
    };
    if terminator != "aws4_request" {
        return Err(malformed("Credential must end with /aws4_request"));
    }
    if access_key_id.is_empty() || region.is_empty() || service.is_empty() {
        return Err(malformed("Credential has an empty part"));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("the Credential's date must be YYYYMMDD"));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_owned).collect();
    if signed_headers
        .iter()
        .any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase()))
    {
        return Err(malformed(
            "SignedHeaders must be lower-case names separated by ;",
        ));
    }
    let mut sig = [0u8; 32];
    hex::decode_to_slice(signature, &mut sig)
        .map_err(|_| malformed("Signature must be 64 hex characters"))?;
    Ok(Authorization {
        access_key_id: access_key_id.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers,
        signature: sig,
    })
}

/// Seconds since the Unix epoch of an `X-Amz-Date` (`20261204T101500Z`).
pub fn parse_amz_date(s: &str) -> Result<i64, SigV4Error> {
    let bad = || SigV4Error::BadDate(s.to_owned());
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, SigV4Error> {
        let t = s.get(r).ok_or_else(bad)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse::<i64>().map_err(|_| bad())
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, sec) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    Ok(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Now, in Unix seconds (what the date window is measured against).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// The `X-Amz-Date` of Unix seconds (`20261204T101500Z`).
pub fn amz_date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The request as the server received it.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path exactly as on the wire (still percent-encoded).
    pub raw_path: &'a str,
    /// The query string as on the wire, without `?`.
    pub raw_query: &'a str,
    /// Every header, names in any case; repeated names repeated.
    pub headers: &'a [(&'a str, &'a str)],
    /// SHA-256 of the body as received.
    pub body_sha256: [u8; 32],
}

impl Request<'_> {
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect()
    }
}

/// What the key store needs to finish the check: the string the client
/// signed and the parsed header. Built only once the date window, the
/// signed headers and the payload hash are known good.
#[derive(Debug)]
pub struct Checked {
    pub authorization: Authorization,
    pub string_to_sign: String,
}

/// Everything about a signed request that needs no secret: the header's
/// form, the date window around `now` (Unix seconds), that `host` and
/// `x-amz-date` are signed, the payload hash, and the canonical request.
pub fn check(req: &Request<'_>, authorization: &str, now: i64) -> Result<Checked, SigV4Error> {
    let auth = parse_authorization(authorization)?;
    let amz_date = match req.header_values("x-amz-date")[..] {
        [one] => one.trim().to_owned(),
        [] => return Err(SigV4Error::MissingDate),
        _ => return Err(malformed("more than one X-Amz-Date header")),
    };
    let signed_at = parse_amz_date(&amz_date)?;
    if amz_date.get(..8) != Some(auth.date.as_str()) {
        return Err(SigV4Error::ScopeDate {
            scope: auth.date.clone(),
            amz_date,
        });
    }
    let skew = now - signed_at;
    if skew.abs() > WINDOW_SECS {
        return Err(SigV4Error::Expired {
            amz_date,
            skew_secs: skew,
        });
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(SigV4Error::UnsignedHeader(required));
        }
    }
    let body_hash = hex::encode(req.body_sha256);
    // The payload line is the client's X-Amz-Content-SHA256 when it sent one
    // (botocore does), which must then be the body's real hash.
    let payload = match req.header_values("x-amz-content-sha256")[..] {
        [] => body_hash,
        [claimed]
            if claimed.trim().starts_with("UNSIGNED-PAYLOAD")
                || claimed.trim().starts_with("STREAMING-") =>
        {
            return Err(SigV4Error::UnsignedPayload)
        }
        [claimed] if claimed.trim().eq_ignore_ascii_case(&body_hash) => claimed.trim().to_owned(),
        _ => return Err(SigV4Error::PayloadHash),
    };
    let canonical = canonical_request(req, &auth.signed_headers, &payload)?;
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        auth.scope(),
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    Ok(Checked {
        authorization: auth,
        string_to_sign,
    })
}

/// The canonical request (AWS's task 1), in botocore's spelling.
pub fn canonical_request(
    req: &Request<'_>,
    signed_headers: &[String],
    payload: &str,
) -> Result<String, SigV4Error> {
    let mut out = String::new();
    out.push_str(&req.method.to_ascii_uppercase());
    out.push('\n');
    out.push_str(&encode(&normalize_path(req.raw_path), "/~"));
    out.push('\n');
    out.push_str(&canonical_query(req.raw_query));
    out.push('\n');
    let mut names: Vec<&String> = signed_headers.iter().collect();
    names.sort();
    names.dedup();
    for name in &names {
        let values = req.header_values(name);
        if values.is_empty() {
            return Err(SigV4Error::MissingHeader((*name).clone()));
        }
        let joined: Vec<String> = values
            .iter()
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&joined.join(","));
        out.push('\n');
    }
    out.push('\n');
    let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    out.push_str(&names.join(";"));
    out.push('\n');
    out.push_str(payload);
    Ok(out)
}

/// RFC 3986 dot-segment removal, keeping a trailing slash (botocore's
/// `normalize_url_path`); an empty path is `/`.
fn normalize_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut p = format!("/{}", out.join("/"));
    if path.ends_with('/') && p != "/" {
        p.push('/');
    }
    p
}

/// Python's `quote(s, safe)`: every byte but unreserved ones and `safe` as `%XX`.
fn encode(s: &str, safe: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) || safe.as_bytes().contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Query pairs sorted as sent (botocore signs the URL's own encoding).
fn canonical_query(raw: &str) -> String {
    if raw.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(&str, &str)> = raw
        .split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k, v)
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The day's signing key: HMAC chain from `AWS4<secret>` over date, region,
/// service and `aws4_request`. What a key store caches (never the secret).
pub fn signing_key(secret: &[u8], date: &str, region: &str, service: &str) -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new(Vec::with_capacity(secret.len() + 4));
    k.extend_from_slice(b"AWS4");
    k.extend_from_slice(secret);
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&mac(&k, date.as_bytes()));
    for part in [region, service, "aws4_request"] {
        let next = mac(&key[..], part.as_bytes());
        key.copy_from_slice(&next);
    }
    key
}

fn mac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Compares the request's signature with the one the signing key makes of
/// the string to sign, in constant time.
pub fn verify(checked: &Checked, signing_key: &[u8; 32]) -> Result<(), SigV4Error> {
    let expected = mac(signing_key, checked.string_to_sign.as_bytes());
    if bool::from(expected.ct_eq(&checked.authorization.signature)) {
        Ok(())
    } else {
        Err(SigV4Error::Mismatch)
    }
}

/// Signs a request the way the SDKs do (for tests and for fief's own
/// clients): the `Authorization` value for `req` at `amz_date`.
pub fn sign(
    req: &Request<'_>,
    access_key_id: &str,
    secret: &[u8],
    region: &str,
    service: &str,
    amz_date: &str,
) -> Result<String, SigV4Error> {
    let mut names: Vec<String> = req
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    let date = amz_date
        .get(..8)
        .ok_or_else(|| SigV4Error::BadDate(amz_date.into()))?;
    let canonical = canonical_request(req, &names, &hex::encode(req.body_sha256))?;
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let sts = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(secret, date, region, service);
    Ok(format!(
        "{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={}, Signature={}",
        names.join(";"),
        hex::encode(mac(&key[..], sts.as_bytes()))
    ))
}

/// Signs `request` as an AWS SDK would at `now` (Unix seconds): `Host` and
/// `X-Amz-Date` set, every header signed, any `Authorization` replaced.
#[cfg(feature = "client")]
pub fn sign_request(
    request: &mut reqwest::Request,
    access_key_id: &str,
    secret: &[u8],
    region: &str,
    service: &str,
    now: i64,
) -> Result<(), SigV4Error> {
    use reqwest::header::{HeaderValue, AUTHORIZATION};
    let url = request.url().clone();
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let date = amz_date(now);
    let bad = |e: reqwest::header::InvalidHeaderValue| malformed(e.to_string());
    let headers = request.headers_mut();
    headers.remove(AUTHORIZATION);
    headers.insert("host", HeaderValue::from_str(&host).map_err(bad)?);
    headers.insert("x-amz-date", HeaderValue::from_str(&date).map_err(bad)?);
    let owned: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let pairs: Vec<(&str, &str)> = owned
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let body = request
        .body()
        .and_then(|b| b.as_bytes())
        .unwrap_or_default();
    let auth = sign(
        &Request {
            method: request.method().as_str(),
            raw_path: url.path(),
            raw_query: url.query().unwrap_or(""),
            headers: &pairs,
            body_sha256: Sha256::digest(body).into(),
        },
        access_key_id,
        secret,
        region,
        service,
        &date,
    )?;
    request
        .headers_mut()
        .insert(AUTHORIZATION, HeaderValue::from_str(&auth).map_err(bad)?);
    Ok(())
}

#[cfg(test)]
mod tests;
