//! API keys: random, shown once, stored only as a SHA-256 hash of the secret.
//!
//! A key reads `fief_<id>_<secret>`: `id` (16 hex) is the lookup prefix and is
//! safe to log and list; `secret` (64 hex, 256 bits) is compared in constant
//! time against its stored hash. A plain hash suffices because the secret is
//! random and long; a slow password hash would only add latency.
//!
//! AWS Signature V4 (the SDKs' `sagemaker-runtime` and `bedrock-runtime`
//! clients, with the key's id as the access key id and its secret as the
//! secret access key) needs the secret itself, so a copy is kept sealed under
//! the master key, bound to the key's id. It is opened only to derive a
//! day's signing key, and only those derived keys are cached.

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use fief_core::{Incarnation, Tags, TenantId};
use fief_crypto::MasterKey;

use crate::db::{q, Row, Tx};
use crate::directory::CachedKey;
use crate::{now, Result, Store, StoreError};

pub const KEY_PREFIX: &str = "fief_";
const ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;

#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant_id: TenantId,
    /// The tenant incarnation the key belongs to; it works for no other.
    #[serde(skip)]
    pub incarnation: Incarnation,
    pub name: String,
    /// A scoped key has only this role's permissions.
    pub role: Option<String>,
    /// Tags policies see on the key (`principal.getTag(...)`), set by the operator.
    pub tags: Tags,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// A newly created key: the record and the secret token, shown once.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub record: ApiKeyRecord,
    pub token: String,
    /// The token's secret part: with the key's id as the access key id,
    /// the pair an AWS SDK signs requests with (SigV4).
    pub aws_secret_access_key: String,
}

fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    hex::encode(raw)
}

fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// What a key's sealed secret is bound to: it opens for no other key.
fn sealed_secret_purpose(key_id: &str) -> String {
    format!("api-key:{key_id}")
}

/// Splits a presented token into (id, secret) if it has the key shape.
fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (hex_lower(id, ID_HEX) && hex_lower(secret, SECRET_HEX)).then_some((id, secret))
}

/// `n` lower-case hex digits.
fn hex_lower(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub(crate) async fn insert_key(
    tx: &mut Tx,
    master: &MasterKey,
    tenant: &TenantId,
    incarnation: &Incarnation,
    name: &str,
    role: Option<&str>,
    tags: &Tags,
) -> Result<NewApiKey> {
    let id = random_hex(ID_HEX / 2);
    let secret = random_hex(SECRET_HEX / 2);
    let created_at = now();
    let tags_json = serde_json::to_string(tags).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let sealed = master.seal_platform_secret(&sealed_secret_purpose(&id), secret.as_bytes())?;
    q(
        "INSERT INTO api_keys (id, tenant_id, incarnation, secret_hash, secret_sealed, name, role, tags, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(tenant.as_str())
    .bind(incarnation.as_str())
    .bind(secret_hash(&secret))
    .bind(sealed)
    .bind(name)
    .bind(role)
    .bind(tags_json)
    .bind(&created_at)
    .exec(tx)
    .await?;
    let token = format!("{KEY_PREFIX}{id}_{secret}");
    let aws_secret_access_key = secret;
    let record = ApiKeyRecord {
        id,
        tenant_id: tenant.clone(),
        incarnation: incarnation.clone(),
        name: name.to_owned(),
        role: role.map(str::to_owned),
        tags: tags.clone(),
        created_at,
        revoked_at: None,
    };
    Ok(NewApiKey {
        record,
        token,
        aws_secret_access_key,
    })
}

const COLUMNS: &str =
    "k.id, k.tenant_id, k.incarnation, k.name, k.role, k.tags, k.created_at, k.revoked_at";

fn from_row(row: &Row) -> Result<ApiKeyRecord> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("api key row: {e}"));
    let tenant: String = row.get("tenant_id")?;
    let incarnation: String = row.get("incarnation")?;
    let tags: String = row.get("tags")?;
    Ok(ApiKeyRecord {
        id: row.get("id")?,
        tenant_id: TenantId::parse(&tenant).map_err(|e| corrupt(&e))?,
        incarnation: Incarnation::parse(&incarnation).map_err(|e| corrupt(&e))?,
        name: row.get("name")?,
        role: row.get("role")?,
        tags: serde_json::from_str(&tags).map_err(|e| corrupt(&e))?,
        created_at: row.get("created_at")?,
        revoked_at: row.get("revoked_at")?,
    })
}

impl Store {
    /// Creates a key of the tenant's active incarnation; with `role`, a
    /// scoped key bound to that role of the tenant (which must exist).
    pub async fn create_api_key(
        &self,
        tenant: &TenantId,
        name: &str,
        role: Option<&str>,
        tags: &Tags,
    ) -> Result<NewApiKey> {
        let incarnation = self
            .active_incarnation(tenant)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("tenant {tenant}")))?;
        if let Some(role) = role {
            // Roles are tenant content, in the tenant's place.
            if self.role_of(tenant, &incarnation, role).await?.is_none() {
                return Err(StoreError::NotFound(format!(
                    "role {role} of tenant {tenant}"
                )));
            }
        }
        let mut tx = self.platform.begin_write().await?;
        let active =
            q("SELECT id FROM tenants WHERE id = $1 AND incarnation = $2 AND status = 'active'")
                .bind(tenant.as_str())
                .bind(incarnation.as_str())
                .opt(&mut tx)
                .await?;
        if active.is_none() {
            return Err(StoreError::NotFound(format!("tenant {tenant}")));
        }
        let key = insert_key(
            &mut tx,
            &self.master,
            tenant,
            &incarnation,
            name,
            role,
            tags,
        )
        .await?;
        tx.commit().await?;
        Ok(key)
    }

    pub async fn list_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>> {
        let rows = q(format!(
            "SELECT {COLUMNS} FROM api_keys k WHERE k.tenant_id = $1 ORDER BY k.created_at, k.id"
        ))
        .bind(tenant.as_str())
        .all(&self.platform)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// A live key of the principal's own tenant, as a principal to explain
    /// a decision for (it grants nothing).
    pub async fn hypothetical_key(
        &self,
        caller: &crate::Principal,
        key_id: &str,
    ) -> Result<Option<crate::Principal>> {
        let Some(tenant) = caller.tenant() else {
            return Ok(None);
        };
        let key = self
            .list_api_keys(tenant)
            .await?
            .into_iter()
            .find(|k| k.id == key_id && k.revoked_at.is_none());
        Ok(key.and_then(|k| caller.hypothetical_key(k.id, k.role, k.tags)))
    }

    /// Revokes a key of this tenant; `false` if there is no such live key.
    /// The very next request with it is refused.
    pub async fn revoke_api_key(&self, tenant: &TenantId, key_id: &str) -> Result<bool> {
        let done = q("UPDATE api_keys SET revoked_at = $1
             WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL")
        .bind(now())
        .bind(key_id)
        .bind(tenant.as_str())
        .exec(&self.platform)
        .await?;
        self.directory
            .invalidate(&crate::Change::Key(key_id.to_owned()));
        Ok(done == 1)
    }

    /// Looks a presented token up by its id and compares the secret's hash in
    /// constant time. `None` for anything that is not a live key of an active
    /// tenant incarnation; the caller answers all of those alike.
    pub(crate) async fn authenticate_api_key(&self, token: &str) -> Result<Option<ApiKeyRecord>> {
        let Some((id, secret)) = parse_token(token) else {
            return Ok(None);
        };
        let Some(key) = self.live_key(id).await? else {
            return Ok(None);
        };
        Ok(bool::from(key.secret_hash.ct_eq(&secret_hash(secret))).then_some(key.record))
    }

    /// A SigV4-signed request's key, once its signature verifies with the
    /// day's signing key derived from the key's sealed secret.
    pub(crate) async fn authenticate_signed_key(
        &self,
        checked: &fief_sigv4::Checked,
    ) -> Result<std::result::Result<ApiKeyRecord, String>> {
        let auth = &checked.authorization;
        let id = auth.access_key_id.as_str();
        let key = if hex_lower(id, ID_HEX) {
            self.live_key(id).await?
        } else {
            None
        };
        let Some(key) = key else {
            return Ok(Err("unknown or revoked access key id".into()));
        };
        let Some(sealed) = &key.secret_sealed else {
            return Ok(Err(
                "this key was created before fief accepted AWS signatures: create a new key for AWS SDK clients"
                    .into(),
            ));
        };
        let scope = (
            id.to_owned(),
            auth.date.clone(),
            auth.region.clone(),
            auth.service.clone(),
        );
        let signing = match self.directory.signing_key(&scope) {
            Some(k) => k,
            None => {
                let secret = zeroize::Zeroizing::new(
                    self.master
                        .open_platform_secret(&sealed_secret_purpose(id), sealed)?,
                );
                let k = fief_sigv4::signing_key(&secret, &auth.date, &auth.region, &auth.service);
                self.directory.keep_signing_key(scope, k.clone());
                k
            }
        };
        Ok(match fief_sigv4::verify(checked, &signing) {
            Ok(()) => Ok(key.record),
            Err(e) => Err(e.to_string()),
        })
    }

    /// A live key of an active tenant incarnation, by id (cached).
    async fn live_key(&self, id: &str) -> Result<Option<CachedKey>> {
        let key = match self.directory.key(id) {
            Some(k) => k,
            None => {
                let epoch = self.directory.epoch();
                let row = q(format!(
                    "SELECT {COLUMNS}, k.secret_hash, k.secret_sealed
                     FROM api_keys k JOIN tenants t ON t.id = k.tenant_id AND t.incarnation = k.incarnation
                     WHERE k.id = $1 AND k.revoked_at IS NULL AND t.status = 'active'"
                ))
                .bind(id)
                .opt(&self.platform)
                .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let key = CachedKey {
                    record: from_row(&row)?,
                    secret_hash: row.get("secret_hash")?,
                    secret_sealed: row.get("secret_sealed")?,
                };
                self.directory.keep_key(epoch, id, key.clone());
                key
            }
        };
        // The key's tenant incarnation must still be the active one.
        let live = self
            .tenant_state(&key.record.tenant_id)
            .await?
            .is_some_and(|t| {
                t.status == crate::TenantStatus::Active && t.incarnation == key.record.incarnation
            });
        Ok(live.then_some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape() {
        let id = "0123456789abcdef";
        let secret = "a".repeat(64);
        let token = format!("fief_{id}_{secret}");
        assert_eq!(parse_token(&token), Some((id, secret.as_str())));
        for bad in [
            String::new(),
            format!("fief_{id}"),
            format!("fief_{id}_{}", "a".repeat(63)),
            format!("fief_{}_{secret}", id.to_uppercase().replace('A', "Z")),
            format!("fief_{id}_{secret}x"),
            format!("Bearer fief_{id}_{secret}"),
        ] {
            assert_eq!(parse_token(&bad), None, "{bad}");
        }
    }
}
