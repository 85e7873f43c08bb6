//! Bedrock agent-runtime's knowledge-base operations, `Retrieve` and
//! `RetrieveAndGenerate`, in fief's terms: a request becomes (base, query,
//! number of results, filter), and fief's hits become the response. Shapes
//! follow botocore's `bedrock-agent-runtime/2023-07-26/service-2.json`.
//! Pure. What fief cannot honour (other retrieval types, sessions carried
//! over, guardrails, prompt templates) is refused, not ignored.

use serde_json::{json, Map, Value};

use crate::{invalid, BedrockError};

/// What a retrieval asks of a knowledge base.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieval {
    pub kb: String,
    pub query: String,
    pub top_k: Option<usize>,
    /// fief's filter shape (`fief-knowledge/src/filter.rs`).
    pub filter: Map<String, Value>,
    /// fief's search mode: `overrideSearchType` SEMANTIC is `vector`,
    /// HYBRID `hybrid`; without it fief's default (hybrid).
    pub mode: Option<&'static str>,
}

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, BedrockError> {
    v.as_object()
        .ok_or_else(|| invalid(format!("{what} must be an object")))
}

fn text<'a>(v: &'a Value, what: &str) -> Result<&'a str, BedrockError> {
    match v.as_str() {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(invalid(format!("{what} is required"))),
    }
}

/// Refuses members fief does not implement, naming them.
fn only(map: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), BedrockError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!("{what}.{k} is not supported by fief"))),
        None => Ok(()),
    }
}

/// `retrievalConfiguration.vectorSearchConfiguration`: the number of
/// results and the filter.
type Search = (Option<usize>, Map<String, Value>, Option<&'static str>);

fn search_configuration(config: Option<&Value>) -> Result<Search, BedrockError> {
    let Some(config) = config else {
        return Ok((None, Map::new(), None));
    };
    let config = object(config, "retrievalConfiguration")?;
    only(
        config,
        &["vectorSearchConfiguration"],
        "retrievalConfiguration",
    )?;
    let Some(vector) = config.get("vectorSearchConfiguration") else {
        return Ok((None, Map::new(), None));
    };
    let vector = object(vector, "vectorSearchConfiguration")?;
    only(
        vector,
        &["numberOfResults", "filter", "overrideSearchType"],
        "vectorSearchConfiguration",
    )?;
    let mode = match vector.get("overrideSearchType") {
        None => None,
        Some(v) => match v.as_str() {
            Some("SEMANTIC") => Some("vector"),
            Some("HYBRID") => Some("hybrid"),
            _ => return Err(invalid("overrideSearchType is SEMANTIC or HYBRID")),
        },
    };
    let top_k = match vector.get("numberOfResults") {
        None => None,
        Some(n) => Some(
            n.as_u64()
                .filter(|n| *n >= 1)
                .ok_or_else(|| invalid("numberOfResults must be a positive whole number"))?
                as usize,
        ),
    };
    let filter = match vector.get("filter") {
        None => Map::new(),
        Some(f) => match retrieval_filter(f)? {
            Value::Object(m) => m,
            _ => Map::new(),
        },
    };
    Ok((top_k, filter, mode))
}

/// A `RetrievalFilter` (`equals`, `greaterThan`, …, `andAll`, `orAll`) as
/// fief's filter.
pub fn retrieval_filter(f: &Value) -> Result<Value, BedrockError> {
    let f = object(f, "filter")?;
    if f.len() != 1 {
        return Err(invalid("a filter holds exactly one operator"));
    }
    let Some((op, arg)) = f.iter().next() else {
        return Err(invalid("a filter holds exactly one operator"));
    };
    let all = |combinator: &str| -> Result<Value, BedrockError> {
        let parts = arg
            .as_array()
            .filter(|p| p.len() >= 2)
            .ok_or_else(|| invalid(format!("{op} takes a list of at least two filters")))?;
        let parts = parts
            .iter()
            .map(retrieval_filter)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(json!({ combinator: parts }))
    };
    let ours = match op.as_str() {
        "andAll" => return all("and"),
        "orAll" => return all("or"),
        "equals" => "eq",
        "notEquals" => "ne",
        "greaterThan" => "gt",
        "greaterThanOrEquals" => "gte",
        "lessThan" => "lt",
        "lessThanOrEquals" => "lte",
        "in" => "in",
        "notIn" => "not_in",
        "startsWith" => "starts_with",
        "stringContains" => "contains",
        other => return Err(invalid(format!("filter {other} is not supported by fief"))),
    };
    let attr = object(arg, op)?;
    only(attr, &["key", "value"], op)?;
    let key = text(
        attr.get("key").unwrap_or(&Value::Null),
        &format!("{op}.key"),
    )?;
    let value = attr
        .get("value")
        .ok_or_else(|| invalid(format!("{op}.value is required")))?;
    Ok(json!({ key: { ours: value } }))
}

/// `Retrieve`: `POST /knowledgebases/{kb}/retrieve`.
pub fn retrieve_request(kb: &str, body: &Value) -> Result<Retrieval, BedrockError> {
    let body = object(body, "the request")?;
    only(
        body,
        &["retrievalQuery", "retrievalConfiguration"],
        "the request",
    )?;
    let query = body
        .get("retrievalQuery")
        .ok_or_else(|| invalid("retrievalQuery is required"))?;
    only(
        object(query, "retrievalQuery")?,
        &["text"],
        "retrievalQuery",
    )?;
    let query = text(&query["text"], "retrievalQuery.text")?;
    let (top_k, filter, mode) = search_configuration(body.get("retrievalConfiguration"))?;
    Ok(Retrieval {
        kb: kb.to_owned(),
        query: query.to_owned(),
        top_k,
        filter,
        mode,
    })
}

/// `RetrieveAndGenerate`: `POST /retrieveAndGenerate`; the retrieval and
/// the model (`modelArn`: a foundation-model ARN or fief's model name).
pub fn retrieve_and_generate_request(body: &Value) -> Result<(Retrieval, String), BedrockError> {
    let body = object(body, "the request")?;
    only(
        body,
        &["input", "retrieveAndGenerateConfiguration"],
        "the request",
    )?;
    let input = body
        .get("input")
        .ok_or_else(|| invalid("input is required"))?;
    only(object(input, "input")?, &["text"], "input")?;
    let query = text(&input["text"], "input.text")?;
    let config = body
        .get("retrieveAndGenerateConfiguration")
        .ok_or_else(|| invalid("retrieveAndGenerateConfiguration is required"))?;
    let config = object(config, "retrieveAndGenerateConfiguration")?;
    only(
        config,
        &["type", "knowledgeBaseConfiguration"],
        "retrieveAndGenerateConfiguration",
    )?;
    if config.get("type").and_then(Value::as_str) != Some("KNOWLEDGE_BASE") {
        return Err(invalid(
            "retrieveAndGenerateConfiguration.type must be KNOWLEDGE_BASE",
        ));
    }
    let kb_config = config
        .get("knowledgeBaseConfiguration")
        .ok_or_else(|| invalid("knowledgeBaseConfiguration is required"))?;
    let kb_config = object(kb_config, "knowledgeBaseConfiguration")?;
    only(
        kb_config,
        &["knowledgeBaseId", "modelArn", "retrievalConfiguration"],
        "knowledgeBaseConfiguration",
    )?;
    let kb = text(
        kb_config.get("knowledgeBaseId").unwrap_or(&Value::Null),
        "knowledgeBaseId",
    )?;
    let arn = text(
        kb_config.get("modelArn").unwrap_or(&Value::Null),
        "modelArn",
    )?;
    // arn:aws:bedrock:<region>::foundation-model/<id>, or fief's own name.
    let model = match arn.split_once(":foundation-model/") {
        Some((_, id)) if arn.starts_with("arn:") => id,
        _ => arn,
    };
    let (top_k, filter, mode) = search_configuration(kb_config.get("retrievalConfiguration"))?;
    Ok((
        Retrieval {
            kb: kb.to_owned(),
            query: query.to_owned(),
            top_k,
            filter,
            mode,
        },
        model.to_owned(),
    ))
}

/// One retrieved chunk in Bedrock's shape: its text, its document as a
/// custom location, its metadata (fief's document id and chunk number
/// added under `x-fief-*`).
fn reference(hit: &Value) -> Value {
    let mut metadata = hit["metadata"].as_object().cloned().unwrap_or_default();
    metadata.insert("x-fief-document-id".into(), hit["document_id"].clone());
    metadata.insert("x-fief-chunk".into(), hit["chunk"].clone());
    json!({
        "content": {"type": "TEXT", "text": hit["text"]},
        "location": {"type": "CUSTOM", "customDocumentLocation": {"id": hit["document_id"]}},
        "metadata": metadata,
    })
}

/// `Retrieve`'s response from fief's hits (`document_id`, `chunk`, `text`,
/// `score`, `metadata`), best first.
pub fn retrieve_response(hits: &[Value]) -> Value {
    let results: Vec<Value> = hits
        .iter()
        .map(|h| {
            let mut r = reference(h);
            r["score"] = h["score"].clone();
            r
        })
        .collect();
    json!({ "retrievalResults": results })
}

/// `RetrieveAndGenerate`'s response: the answer as one cited part that
/// references every retrieved chunk.
pub fn retrieve_and_generate_response(answer: &str, hits: &[Value], session_id: &str) -> Value {
    let references: Vec<Value> = hits.iter().map(reference).collect();
    let citations = if references.is_empty() {
        Vec::new()
    } else {
        vec![json!({
            "generatedResponsePart": {"textResponsePart": {
                "text": answer,
                "span": {"start": 0, "end": answer.chars().count().saturating_sub(1)},
            }},
            "retrievedReferences": references,
        })]
    };
    json!({"output": {"text": answer}, "citations": citations, "sessionId": session_id})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_retrieve_request_is_a_query_with_fiefs_filter() {
        let body = json!({
            "retrievalQuery": {"text": "where is INV-7?"},
            "retrievalConfiguration": {"vectorSearchConfiguration": {
                "numberOfResults": 3,
                "filter": {"andAll": [
                    {"equals": {"key": "team", "value": "ops"}},
                    {"orAll": [
                        {"greaterThanOrEquals": {"key": "year", "value": 2020}},
                        {"startsWith": {"key": "code", "value": "INV"}},
                    ]},
                ]},
            }},
        });
        let r = retrieve_request("notes", &body).unwrap();
        assert_eq!(
            (r.kb.as_str(), r.query.as_str(), r.top_k),
            ("notes", "where is INV-7?", Some(3))
        );
        assert_eq!(
            Value::Object(r.filter),
            json!({"and": [{"team": {"eq": "ops"}}, {"or": [{"year": {"gte": 2020}}, {"code": {"starts_with": "INV"}}]}]})
        );
        assert_eq!(r.mode, None);
        let bare = retrieve_request("kb", &json!({"retrievalQuery": {"text": "q"}})).unwrap();
        assert_eq!((bare.top_k, bare.filter.len()), (None, 0));
        for (kind, mode) in [("SEMANTIC", "vector"), ("HYBRID", "hybrid")] {
            let body = json!({"retrievalQuery": {"text": "q"}, "retrievalConfiguration": {"vectorSearchConfiguration": {"overrideSearchType": kind}}});
            assert_eq!(retrieve_request("kb", &body).unwrap().mode, Some(mode));
        }
    }

    #[test]
    fn what_fief_cannot_honour_is_refused() {
        for body in [
            json!({}),
            json!({"retrievalQuery": {"text": " "}}),
            json!({"retrievalQuery": {"text": "q"}, "guardrailConfiguration": {}}),
            json!({"retrievalQuery": {"text": "q"}, "retrievalConfiguration": {"vectorSearchConfiguration": {"overrideSearchType": "KEYWORDS"}}}),
            json!({"retrievalQuery": {"text": "q"}, "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 0}}}),
            json!({"retrievalQuery": {"text": "q"}, "retrievalConfiguration": {"vectorSearchConfiguration": {"filter": {"listContains": {"key": "a", "value": 1}}}}}),
            json!({"retrievalQuery": {"text": "q"}, "retrievalConfiguration": {"vectorSearchConfiguration": {"filter": {"andAll": [{"equals": {"key": "a", "value": 1}}]}}}}),
        ] {
            assert!(retrieve_request("kb", &body).is_err(), "{body}");
        }
        let rag = |config: Value| json!({"input": {"text": "q"}, "retrieveAndGenerateConfiguration": config});
        for config in [
            json!({"type": "EXTERNAL_SOURCES"}),
            json!({"type": "KNOWLEDGE_BASE"}),
            json!({"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {"knowledgeBaseId": "kb"}}),
            json!({"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {"knowledgeBaseId": "kb", "modelArn": "m", "generationConfiguration": {}}}),
        ] {
            assert!(
                retrieve_and_generate_request(&rag(config.clone())).is_err(),
                "{config}"
            );
        }
        let mut with_session = rag(
            json!({"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {"knowledgeBaseId": "kb", "modelArn": "m"}}),
        );
        assert!(retrieve_and_generate_request(&with_session).is_ok());
        with_session["sessionId"] = json!("s-1");
        assert!(retrieve_and_generate_request(&with_session).is_err());
    }

    #[test]
    fn a_model_arn_names_fiefs_model() {
        let body = |arn: &str| json!({"input": {"text": "q"}, "retrieveAndGenerateConfiguration": {"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {"knowledgeBaseId": "kb", "modelArn": arn}}});
        let (_, m) = retrieve_and_generate_request(&body(
            "arn:aws:bedrock:us-east-1::foundation-model/chat-small",
        ))
        .unwrap();
        assert_eq!(m, "chat-small");
        let (r, m) = retrieve_and_generate_request(&body("chat-small")).unwrap();
        assert_eq!((m.as_str(), r.kb.as_str()), ("chat-small", "kb"));
    }

    #[test]
    fn responses_carry_text_location_metadata_and_score() {
        let hits = [
            json!({"document_id": "d1", "chunk": 2, "text": "t", "score": 0.5, "metadata": {"team": "ops"}}),
        ];
        let r = retrieve_response(&hits);
        assert_eq!(
            r,
            json!({"retrievalResults": [{
                "content": {"type": "TEXT", "text": "t"},
                "location": {"type": "CUSTOM", "customDocumentLocation": {"id": "d1"}},
                "metadata": {"team": "ops", "x-fief-document-id": "d1", "x-fief-chunk": 2},
                "score": 0.5,
            }]})
        );
        let g = retrieve_and_generate_response("an answer", &hits, "s");
        assert_eq!(g["output"]["text"], "an answer");
        assert_eq!(g["sessionId"], "s");
        assert_eq!(
            g["citations"][0]["retrievedReferences"][0]["location"]["customDocumentLocation"]["id"],
            "d1"
        );
        assert_eq!(
            g["citations"][0]["generatedResponsePart"]["textResponsePart"]["span"],
            json!({"start": 0, "end": 8})
        );
        assert_eq!(
            retrieve_and_generate_response("x", &[], "s")["citations"],
            json!([])
        );
    }
}
