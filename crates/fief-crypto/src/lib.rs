//! Envelope encryption (invariant 5): every tenant has its own 256-bit data key,
//! stored only wrapped by the deployment's master key. Content is sealed with
//! AES-256-GCM and associated data that binds tenant, kind and object name, so
//! bytes moved to another tenant or another object no longer decrypt.

use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use fief_core::{Incarnation, TenantId};

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("ciphertext does not decrypt with this key and context")]
    Decrypt,
    #[error("encryption failed")]
    Encrypt,
    #[error("master key: {0}")]
    MasterKey(String),
}

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
/// First byte of every sealed blob, so the format can change later.
const FORMAT_V1: u8 = 1;

/// The key that wraps every tenant data key.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; KEY_LEN]);

impl MasterKey {
    /// Parses 64 hex characters (the `FIEF_MASTER_KEY` form).
    pub fn from_hex(s: &str) -> Result<Self, CryptoError> {
        let mut bytes = hex::decode(s.trim())
            .map_err(|_| CryptoError::MasterKey("expected 64 hex characters".into()))?;
        let key: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::MasterKey("expected 64 hex characters (32 bytes)".into()))?;
        bytes.zeroize();
        Ok(Self(key))
    }

    /// Seals a platform secret (not tenant data) under the master key,
    /// bound to its purpose so one sealed value cannot stand in for another.
    pub fn seal_platform_secret(
        &self,
        purpose: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        seal_with(&self.cipher(), &platform_aad(purpose), plaintext)
    }

    pub fn open_platform_secret(
        &self,
        purpose: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        open_with(&self.cipher(), &platform_aad(purpose), sealed)
    }

    /// A 256-bit key for one purpose, derived from the master key (so it
    /// needs no storage of its own and changes with the master key).
    pub fn derive(&self, purpose: &str) -> [u8; KEY_LEN] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"fief derived key v1\0");
        h.update(self.0);
        h.update((purpose.len() as u64).to_be_bytes());
        h.update(purpose.as_bytes());
        h.finalize().into()
    }

    /// Reads the key file, or creates it (mode 0600) when it does not exist yet.
    pub fn load_or_create(path: &Path) -> Result<Self, CryptoError> {
        match std::fs::read_to_string(path) {
            Ok(mut s) => {
                let key = Self::from_hex(&s)
                    .map_err(|e| CryptoError::MasterKey(format!("{}: {e}", path.display())));
                s.zeroize();
                key
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut raw = [0u8; KEY_LEN];
                rand::rngs::OsRng.fill_bytes(&mut raw);
                let mut text = hex::encode(raw);
                write_secret_file(path, text.as_bytes())
                    .map_err(|e| CryptoError::MasterKey(format!("{}: {e}", path.display())))?;
                text.zeroize();
                Ok(Self(raw))
            }
            Err(e) => Err(CryptoError::MasterKey(format!("{}: {e}", path.display()))),
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }
}

/// Writes a file readable by its owner only; fails if it already exists so a
/// secret is never silently replaced.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// One tenant's data key, in memory only while it is in use.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; KEY_LEN]);

impl DataKey {
    pub fn generate() -> Self {
        let mut raw = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        Self(raw)
    }

    /// A 256-bit key for one purpose, derived from this tenant's data key:
    /// it goes with the tenant (offboarding destroys the data key) and is
    /// unrelated to any other tenant's for the same purpose.
    pub fn derive(&self, purpose: &str) -> [u8; KEY_LEN] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"fief tenant derived key v1\0");
        h.update(self.0);
        h.update((purpose.len() as u64).to_be_bytes());
        h.update(purpose.as_bytes());
        h.finalize().into()
    }

    /// Wraps this key under the master key, bound to its tenant and the
    /// tenant's incarnation: a wrapped key of an offboarded tenant does not
    /// open for a later tenant with the same id.
    pub fn wrap(
        &self,
        master: &MasterKey,
        tenant: &TenantId,
        incarnation: &Incarnation,
    ) -> Result<Vec<u8>, CryptoError> {
        seal_with(&master.cipher(), &wrap_aad(tenant, incarnation), &self.0)
    }

    pub fn unwrap(
        master: &MasterKey,
        tenant: &TenantId,
        incarnation: &Incarnation,
        wrapped: &[u8],
    ) -> Result<Self, CryptoError> {
        Self::from_wrapped(open_with(
            &master.cipher(),
            &wrap_aad(tenant, incarnation),
            wrapped,
        )?)
    }

    /// Opens a key wrapped by the first format (bound to the tenant id
    /// only), so start-up can rewrap it with its incarnation.
    pub fn unwrap_legacy(
        master: &MasterKey,
        tenant: &TenantId,
        wrapped: &[u8],
    ) -> Result<Self, CryptoError> {
        Self::from_wrapped(open_with(
            &master.cipher(),
            &legacy_wrap_aad(tenant),
            wrapped,
        )?)
    }

    fn from_wrapped(mut raw: Vec<u8>) -> Result<Self, CryptoError> {
        let key: Result<[u8; KEY_LEN], _> = raw.as_slice().try_into();
        raw.zeroize();
        key.map(Self).map_err(|_| CryptoError::Decrypt)
    }

    pub fn seal(&self, ctx: &SealContext, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal_with(
            &Aes256Gcm::new(&self.0.into()),
            ctx.aad.as_bytes(),
            plaintext,
        )
    }

    pub fn open(&self, ctx: &SealContext, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open_with(&Aes256Gcm::new(&self.0.into()), ctx.aad.as_bytes(), sealed)
    }
}

/// The associated data of one sealed object: tenant, kind and name.
pub struct SealContext {
    aad: String,
}

impl SealContext {
    pub fn new(tenant: &TenantId, kind: &str, object: &str) -> Self {
        // Lengths are included so no two (kind, object) pairs encode alike.
        Self {
            aad: format!(
                "fief:v1:{tenant}:{}:{kind}:{}:{object}",
                kind.len(),
                object.len()
            ),
        }
    }
}

fn platform_aad(purpose: &str) -> Vec<u8> {
    format!("fief:v1:platform:{purpose}").into_bytes()
}

fn wrap_aad(tenant: &TenantId, incarnation: &Incarnation) -> Vec<u8> {
    format!("fief:v2:data-key:{tenant}:{incarnation}").into_bytes()
}

fn legacy_wrap_aad(tenant: &TenantId) -> Vec<u8> {
    format!("fief:v1:data-key:{tenant}").into_bytes()
}

fn seal_with(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| CryptoError::Encrypt)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

fn open_with(cipher: &Aes256Gcm, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    match sealed.split_first() {
        Some((&FORMAT_V1, rest)) if rest.len() >= NONCE_LEN => {
            let (nonce, ct) = rest.split_at(NONCE_LEN);
            cipher
                .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
                .map_err(|_| CryptoError::Decrypt)
        }
        _ => Err(CryptoError::Decrypt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[test]
    fn seal_open_roundtrip_and_binding() {
        let (a, b) = (DataKey::generate(), DataKey::generate());
        let ctx = SealContext::new(&t("aa"), "model", "m1");
        let sealed = a.seal(&ctx, b"secret weights").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(a.open(&ctx, &sealed).unwrap(), b"secret weights");
        // Another tenant's key, another tenant's context, another object: all fail.
        assert!(b.open(&ctx, &sealed).is_err());
        assert!(a
            .open(&SealContext::new(&t("bb"), "model", "m1"), &sealed)
            .is_err());
        assert!(a
            .open(&SealContext::new(&t("aa"), "model", "m2"), &sealed)
            .is_err());
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(a.open(&ctx, &flipped).is_err());
        assert!(a.open(&ctx, &[]).is_err());
    }

    #[test]
    fn wrapped_keys_are_bound_to_tenant_and_incarnation() {
        let master = MasterKey::from_hex(&"11".repeat(32)).unwrap();
        let other = MasterKey::from_hex(&"22".repeat(32)).unwrap();
        let (first, later) = (
            Incarnation::from_random([1; 16]),
            Incarnation::from_random([2; 16]),
        );
        let dk = DataKey::generate();
        let wrapped = dk.wrap(&master, &t("aa"), &first).unwrap();
        let back = DataKey::unwrap(&master, &t("aa"), &first, &wrapped).unwrap();
        assert_eq!(back.0, dk.0);
        assert!(DataKey::unwrap(&master, &t("bb"), &first, &wrapped).is_err());
        assert!(DataKey::unwrap(&master, &t("aa"), &later, &wrapped).is_err());
        assert!(DataKey::unwrap(&other, &t("aa"), &first, &wrapped).is_err());
        assert!(DataKey::unwrap_legacy(&master, &t("aa"), &wrapped).is_err());
    }

    #[test]
    fn master_key_file_is_created_private_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile_dir();
        let path = dir.join("master.key");
        let k1 = MasterKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k2 = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(k1.0, k2.0);
        assert!(MasterKey::from_hex("abcd").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let mut raw = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let d = std::env::temp_dir().join(format!("fief-crypto-{}", hex::encode(raw)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
