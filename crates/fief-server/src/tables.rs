//! The tenant tables API: JSON items under (table, key), sealed with the
//! tenant's key, placed by tier. Authorise, then call the store. No HTTP.

use serde::Deserialize;

use fief_core::{parse_item_key, TableRef};
use fief_policy::{Action, Resource};
use fief_store::{Condition, Item, ItemPage, Principal, PutOutcome, TenantScope};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Largest page of a listing.
pub const MAX_LIMIT: usize = 1000;

async fn authorize_table(
    state: &AppState,
    principal: &Principal,
    action: Action,
    raw: &str,
) -> ApiResult<(TenantScope, TableRef)> {
    let caller = principal.tenant().ok_or(ApiError::AccessDenied)?;
    let table = TableRef::parse(raw, caller)?;
    let scope = state
        .authorize_scoped(principal, action, &Resource::Table(table.clone()))
        .await?;
    Ok((scope, table))
}

pub async fn put(
    state: &AppState,
    principal: &Principal,
    raw: &str,
    key: &str,
    value: serde_json::Value,
    condition: Condition,
) -> ApiResult<(Item, PutOutcome)> {
    let (scope, table) = authorize_table(state, principal, Action::PutItem, raw).await?;
    let key = parse_item_key(key)?;
    let bytes_in = serde_json::to_vec(&value).map_or(0, |v| v.len() as u64);
    let put = state
        .store
        .put_item(&scope, &table.name, &key, &value, condition)
        .await?;
    bill(state, principal, bytes_in, 1).await?;
    Ok(put)
}

/// A table operation's usage event (no table name: the operator sees counts).
async fn bill(state: &AppState, principal: &Principal, bytes_in: u64, units: u64) -> ApiResult<()> {
    let q = fief_metering::Quantities {
        bytes_in,
        units,
        ..Default::default()
    };
    crate::meter::bill(state, principal, fief_metering::Kind::Table, "", q).await
}

pub async fn get(state: &AppState, principal: &Principal, raw: &str, key: &str) -> ApiResult<Item> {
    let (scope, table) = authorize_table(state, principal, Action::GetItem, raw).await?;
    let key = parse_item_key(key)?;
    let item = state
        .store
        .get_item(&scope, &table.name, &key)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("item {key} not found")))?;
    bill(state, principal, 0, 1).await?;
    Ok(item)
}

pub async fn delete(
    state: &AppState,
    principal: &Principal,
    raw: &str,
    key: &str,
    condition: Condition,
) -> ApiResult<()> {
    let (scope, table) = authorize_table(state, principal, Action::DeleteItem, raw).await?;
    let key = parse_item_key(key)?;
    if state
        .store
        .delete_item(&scope, &table.name, &key, condition)
        .await?
    {
        bill(state, principal, 0, 1).await
    } else {
        Err(ApiError::NotFound(format!("item {key} not found")))
    }
}

/// `If-Match: "<version>"` and `If-None-Match: *` (what DynamoDB's
/// conditional writes give agents sharing state: compare-and-set).
pub fn condition(if_match: Option<&str>, if_none_match: Option<&str>) -> ApiResult<Condition> {
    match (if_match.map(str::trim), if_none_match.map(str::trim)) {
        (None, None) => Ok(Condition::Any),
        (Some(_), Some(_)) => Err(ApiError::Validation(
            "send If-Match or If-None-Match, not both".into(),
        )),
        (None, Some("*")) => Ok(Condition::Absent),
        (None, Some(_)) => Err(ApiError::Validation(
            "If-None-Match takes `*` here (write only if the item does not exist)".into(),
        )),
        (Some(tag), None) => tag
            .trim_start_matches("W/")
            .trim_matches('"')
            .parse::<i64>()
            .ok()
            .filter(|v| *v > 0)
            .map(Condition::Version)
            .ok_or_else(|| {
                ApiError::Validation(format!(
                    "If-Match takes an item's version as its ETag shows it (\"3\"), not {tag}"
                ))
            }),
    }
}

/// An item's ETag: its version, quoted.
pub fn etag(item: &Item) -> String {
    format!("\"{}\"", item.version)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default)]
    pub prefix: String,
    pub limit: Option<usize>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

pub async fn list(
    state: &AppState,
    principal: &Principal,
    raw: &str,
    q: ListQuery,
) -> ApiResult<ItemPage> {
    let (scope, table) = authorize_table(state, principal, Action::ListItems, raw).await?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::Validation(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    if q.prefix.len() > 1024 {
        return Err(ApiError::Validation(
            "prefix is longer than a key can be".into(),
        ));
    }
    let after = q.cursor.as_deref().map(parse_item_key).transpose()?;
    let page = state
        .store
        .list_items(&scope, &table.name, &q.prefix, after.as_deref(), limit)
        .await?;
    bill(state, principal, 0, page.items.len() as u64).await?;
    Ok(page)
}
