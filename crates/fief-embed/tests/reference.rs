//! Compares the Rust tokenizer and the tract run with reference vectors
//! (`tests/fixtures/minilm_reference.json`, written by
//! `scripts/embedder/reference_vectors.py` from HF `tokenizers` and an
//! independent numpy forward pass, checked there against published
//! sentence-transformers output).
//!
//! Needs the model installed by `bash scripts/setup-embedder.sh`. Without
//! it the tests skip, except under CI (`CI=true`), where they fail.
// Helpers outside #[test] fns fail the test by panicking, like the tests do.
#![allow(clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;
use std::time::Instant;

use fief_embed::{chunk, default_dir, MiniLm, DIM, MAX_TOKENS};

#[derive(serde::Deserialize)]
struct Fixture {
    sentences: Vec<Sentence>,
}

#[derive(serde::Deserialize)]
struct Sentence {
    text: String,
    ids: Vec<i64>,
    embedding: Vec<f32>,
}

fn fixture() -> Fixture {
    let raw = include_str!("fixtures/minilm_reference.json");
    serde_json::from_str(raw).expect("the fixture parses")
}

/// The installed model, loaded once for all tests; `None` means skip.
fn model() -> Option<&'static MiniLm> {
    static MODEL: OnceLock<Option<MiniLm>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = default_dir().expect("an embedder directory");
            let started = Instant::now();
            match MiniLm::load(&dir) {
                Ok(m) => {
                    eprintln!(
                        "loaded the embedder from {dir:?} in {:?}",
                        started.elapsed()
                    );
                    Some(m)
                }
                Err(e @ fief_embed::EmbedError::NotInstalled { .. }) => {
                    if std::env::var("CI").as_deref() == Ok("true") {
                        panic!("{e}");
                    }
                    eprintln!("skipping the reference tests: {e}");
                    None
                }
                Err(e) => panic!("{e}"),
            }
        })
        .as_ref()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn token_ids_match_reference() {
    let Some(model) = model() else { return };
    let fixture = fixture();
    assert!(fixture.sentences.len() >= 20);
    for s in &fixture.sentences {
        let enc = model.tokenizer().encode(&s.text);
        assert_eq!(enc.ids, s.ids, "token ids for {:?}", s.text);
    }
    // The fixture covers truncation.
    assert!(fixture
        .sentences
        .iter()
        .any(|s| s.ids.len() == MAX_TOKENS
            && model.tokenizer().count_tokens(&s.text) > MAX_TOKENS - 2));
}

#[test]
fn embeddings_match_reference() {
    let Some(model) = model() else { return };
    let fixture = fixture();
    let texts: Vec<&str> = fixture.sentences.iter().map(|s| s.text.as_str()).collect();
    let started = Instant::now();
    let ours = model.embed(&texts).expect("embedding works");
    eprintln!(
        "embedded {} fixture texts in {:?}",
        texts.len(),
        started.elapsed()
    );
    assert_eq!(ours.len(), texts.len());
    let mut min = (f32::INFINITY, "");
    for (s, v) in fixture.sentences.iter().zip(&ours) {
        assert_eq!(v.len(), DIM);
        assert_eq!(s.embedding.len(), DIM);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm} for {:?}", s.text);
        let c = cosine(v, &s.embedding);
        assert!(c >= 0.999, "cosine {c} for {:?}", s.text);
        if c < min.0 {
            min = (c, s.text.as_str());
        }
    }
    eprintln!(
        "minimum cosine to the reference: {:.7} ({:?})",
        min.0,
        min.1.chars().take(40).collect::<String>()
    );
}

#[test]
fn batching_does_not_change_vectors() {
    let Some(model) = model() else { return };
    let fixture = fixture();
    // Mixed lengths in one call, so short texts are padded next to long ones.
    let texts: Vec<&str> = fixture
        .sentences
        .iter()
        .map(|s| s.text.as_str())
        .take(20)
        .collect();
    let batched = model.embed(&texts).expect("batch");
    let mut min = f32::INFINITY;
    for (text, b) in texts.iter().zip(&batched) {
        let single = model.embed(&[text]).expect("single");
        min = min.min(cosine(b, &single[0]));
    }
    eprintln!("minimum cosine batch vs single: {min:.8}");
    assert!(min > 0.9999, "{min}");
    assert!(model.embed(&[]).expect("empty").is_empty());
}

#[test]
fn chunks_of_a_long_text_fit_the_model() {
    let Some(model) = model() else { return };
    let tok = model.tokenizer();
    let text = fixture()
        .sentences
        .iter()
        .map(|s| s.text.clone())
        .collect::<Vec<_>>()
        .join("\n\n");
    assert!(tok.count_tokens(&text) > 2 * MAX_TOKENS);
    let chunks = chunk(tok, &text, MAX_TOKENS - 2, 32);
    assert!(chunks.len() >= 3);
    for c in &chunks {
        assert_eq!(c.text, text[c.start..c.end]);
        assert!(!tok.encode(&c.text).truncated, "{c:?}");
    }
}

/// `cargo test -p fief-embed --test reference -- --ignored --nocapture`
#[test]
#[ignore = "timing only"]
fn speed() {
    let Some(model) = model() else { return };
    // About 100 word pieces each.
    let base = "The gateway routes each tenant's requests to its own models, checks every \
                call against policies, and writes an audit entry for every decision it makes.";
    let texts: Vec<String> = (0..32)
        .map(|i| format!("{i}: {base} {base} {base}"))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let pieces = model.tokenizer().count_tokens(refs[0]);
    model.embed(&refs[..2]).expect("warm-up");
    let started = Instant::now();
    model.embed(&refs).expect("batch");
    let batched = started.elapsed();
    let started = Instant::now();
    for t in &refs[..8] {
        model.embed(&[t]).expect("single");
    }
    let single = started.elapsed() / 8;
    eprintln!(
        "{pieces} pieces per text: batched {:.1} texts/s, one at a time {single:?} per text",
        refs.len() as f64 / batched.as_secs_f64()
    );
}
