//! Knowledge-base operations and `/v1/embeddings`: authorise, then call
//! fief-knowledge with the scope the decision granted. No HTTP here.

use fief_metering::{Kind, Quantities};
use serde::Deserialize;
use serde_json::{json, Value};

use fief_core::{parse_document_id, KbRef, Tier};
use fief_knowledge::{
    DocumentInput, DocumentView, KnowledgeBaseView, KnowledgeError, QueryHit, QueryInput,
};
use fief_policy::{Action, Resource};
use fief_store::{DocumentRecord, KnowledgeBaseRecord, Principal, TenantScope};

use crate::error::{ApiError, ApiResult};
use crate::quota::Cost;
use crate::state::{AppState, SharedState};

impl From<KnowledgeError> for ApiError {
    fn from(e: KnowledgeError) -> Self {
        match e {
            KnowledgeError::Validation(m) => ApiError::Validation(m),
            KnowledgeError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            KnowledgeError::Unavailable(m) => ApiError::Unavailable(m),
            KnowledgeError::Upstream(m) => {
                ApiError::Unavailable(format!("embeddings upstream {m}"))
            }
            KnowledgeError::Store(e) => e.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Resolves a client-written knowledge-base reference and authorises
/// `action` on it before anything is looked up (invariant 7).
async fn authorize_kb(
    state: &AppState,
    principal: &Principal,
    action: Action,
    raw: &str,
) -> ApiResult<(TenantScope, KbRef)> {
    let caller = principal.tenant().ok_or(ApiError::AccessDenied)?;
    let kb = KbRef::parse(raw, caller)?;
    let scope = state
        .authorize_scoped(principal, action, &Resource::KnowledgeBase(kb.clone()))
        .await?;
    Ok((scope, kb))
}

async fn authorize_tenant(
    state: &AppState,
    principal: &Principal,
    action: Action,
) -> ApiResult<TenantScope> {
    let caller = principal.tenant().ok_or(ApiError::AccessDenied)?.clone();
    state
        .authorize_scoped(principal, action, &Resource::Tenant(caller))
        .await
}

/// The tier decides where the tenant's vectors are placed, per request, so
/// a tier change takes effect without a restart.
async fn tier(state: &AppState, scope: &TenantScope) -> ApiResult<Tier> {
    state
        .store
        .get_tenant(scope.tenant())
        .await?
        .map(|t| t.tier)
        .ok_or(ApiError::AccessDenied)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKb {
    pub name: String,
}

pub async fn create(
    state: &AppState,
    principal: &Principal,
    req: CreateKb,
) -> ApiResult<KnowledgeBaseRecord> {
    let (scope, kb) =
        authorize_kb(state, principal, Action::CreateKnowledgeBase, &req.name).await?;
    let record = state
        .knowledge
        .create(&state.store, &scope, &kb.name)
        .await?;
    state
        .audit_change(
            principal,
            Action::CreateKnowledgeBase,
            &Resource::KnowledgeBase(kb),
            "knowledge base created".into(),
        )
        .await?;
    Ok(record)
}

pub async fn list(state: &AppState, principal: &Principal) -> ApiResult<Vec<KnowledgeBaseRecord>> {
    let scope = authorize_tenant(state, principal, Action::ListKnowledgeBases).await?;
    Ok(state.knowledge.list(&state.store, &scope).await?)
}

pub async fn get(
    state: &AppState,
    principal: &Principal,
    raw: &str,
) -> ApiResult<KnowledgeBaseView> {
    let (scope, kb) = authorize_kb(state, principal, Action::GetKnowledgeBase, raw).await?;
    let tier = tier(state, &scope).await?;
    Ok(state
        .knowledge
        .get(&state.store, &scope, tier, &kb.name)
        .await?)
}

pub async fn delete(state: &AppState, principal: &Principal, raw: &str) -> ApiResult<()> {
    let (scope, kb) = authorize_kb(state, principal, Action::DeleteKnowledgeBase, raw).await?;
    state
        .knowledge
        .delete(&state.store, &scope, &kb.name)
        .await?;
    state
        .audit_change(
            principal,
            Action::DeleteKnowledgeBase,
            &Resource::KnowledgeBase(kb),
            "knowledge base deleted with its documents".into(),
        )
        .await
}

pub async fn list_documents(
    state: &AppState,
    principal: &Principal,
    raw: &str,
) -> ApiResult<Vec<DocumentRecord>> {
    let (scope, kb) = authorize_kb(state, principal, Action::GetKnowledgeBase, raw).await?;
    Ok(state
        .knowledge
        .list_documents(&state.store, &scope, &kb.name)
        .await?)
}

pub async fn put_document(
    state: &SharedState,
    principal: &Principal,
    raw: &str,
    doc: &str,
    input: DocumentInput,
) -> ApiResult<DocumentView> {
    let (scope, kb) = authorize_kb(state, principal, Action::PutDocument, raw).await?;
    let _admission = state.quota.admit(state, principal, Cost::Request).await?;
    let tier = tier(state, &scope).await?;
    let doc = parse_document_id(doc)?;
    let view = state
        .knowledge
        .put_document(&state.store, &scope, tier, &kb.name, &doc, input)
        .await?;
    state
        .audit_change(
            principal,
            Action::PutDocument,
            &Resource::KnowledgeBase(kb),
            format!("document {doc} written: {} chunks", view.chunks),
        )
        .await?;
    let q = Quantities {
        units: view.chunks as u64,
        embedding_tokens: view.tokens as u64,
        ..Default::default()
    };
    crate::meter::bill(state, principal, Kind::KbIngest, "", q).await?;
    Ok(view)
}

pub async fn delete_document(
    state: &AppState,
    principal: &Principal,
    raw: &str,
    doc: &str,
) -> ApiResult<()> {
    let (scope, kb) = authorize_kb(state, principal, Action::DeleteDocument, raw).await?;
    let tier = tier(state, &scope).await?;
    let doc = parse_document_id(doc)?;
    state
        .knowledge
        .delete_document(&state.store, &scope, tier, &kb.name, &doc)
        .await?;
    state
        .audit_change(
            principal,
            Action::DeleteDocument,
            &Resource::KnowledgeBase(kb),
            format!("document {doc} deleted"),
        )
        .await
}

pub async fn query(
    state: &SharedState,
    principal: &Principal,
    raw: &str,
    input: QueryInput,
) -> ApiResult<Vec<QueryHit>> {
    let (scope, kb) = authorize_kb(state, principal, Action::QueryKnowledgeBase, raw).await?;
    let _admission = state.quota.admit(state, principal, Cost::Request).await?;
    let tier = tier(state, &scope).await?;
    let (hits, stats) = state
        .knowledge
        .query(&state.store, &scope, tier, &kb.name, input)
        .await?;
    if stats.rejected > 0 {
        // Only a query bug or tampering gets here; the seal held.
        tracing::error!(
            tenant = %scope.tenant(),
            kb = %kb.name,
            rejected = stats.rejected,
            "chunks of another tenant reached a query and failed to open; none was returned"
        );
        state.metrics.chunks_rejected(stats.rejected);
    }
    let q = Quantities {
        units: hits.len() as u64,
        ..Default::default()
    };
    crate::meter::bill(state, principal, Kind::KbQuery, "", q).await?;
    Ok(hits)
}

/// `POST /v1/embeddings` body (the OpenAI shape).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    pub input: EmbeddingsInput,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Accepted for OpenAI compatibility; the caller is already known.
    #[serde(default, rename = "user")]
    pub _user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingsInput {
    One(String),
    Many(Vec<String>),
}

pub async fn embeddings(
    state: &SharedState,
    principal: &Principal,
    req: EmbeddingsRequest,
) -> ApiResult<Value> {
    authorize_tenant(state, principal, Action::CreateEmbeddings).await?;
    let _admission = state.quota.admit(state, principal, Cost::Request).await?;
    let model = state.knowledge.embedder().model_name().to_owned();
    if let Some(asked) = &req.model {
        if asked != &model && asked != &format!("sentence-transformers/{model}") {
            return Err(ApiError::Validation(format!(
                "model `{asked}` is not served here; this gateway embeds with `{model}`"
            )));
        }
    }
    if let Some(f) = &req.encoding_format {
        if f != "float" {
            return Err(ApiError::Validation(
                "encoding_format must be `float`".into(),
            ));
        }
    }
    let inputs = match req.input {
        EmbeddingsInput::One(s) => vec![s],
        EmbeddingsInput::Many(v) => v,
    };
    let bytes_in = inputs.iter().map(|s| s.len() as u64).sum();
    let logged = crate::logs::wants_content(state, principal, Kind::Embedding)
        .await
        .then(|| inputs.clone());
    let embedded = state.knowledge.embed(inputs).await?;
    let q = Quantities {
        embedding_tokens: embedded.tokens as u64,
        bytes_in,
        ..Default::default()
    };
    let data: Vec<Value> = embedded
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| json!({"object": "embedding", "index": index, "embedding": embedding}))
        .collect();
    let answer = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens},
    });
    let content = logged.map(|input| fief_logs::Content {
        request: json!({ "model": model, "input": input }),
        response: fief_logs::summarize_embeddings(&answer),
    });
    crate::meter::bill_and_log(state, principal, Kind::Embedding, &model, q, content).await?;
    Ok(answer)
}
