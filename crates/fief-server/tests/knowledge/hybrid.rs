//! Hybrid search through the HTTP API, on a keyword-shaped set: product
//! codes and supplier names mixed into prose, asked for exactly, and the
//! same products asked for in other words. Vector search misses codes and
//! names, keyword search misses paraphrases; hybrid (the default) finds
//! both. Two tenants hold the same documents: each one's keyword index
//! matches only its own chunks, and another tenant's words match nothing.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::kb::{canary, create_kb, embedder_installed, put_doc};
use crate::common::{Resp, TestServer};

/// (document id, text, a question in other words, the supplier's name).
const PRODUCTS: &[(&str, &str, &str, &str)] = &[
    ("pump", "Model HX-4471-B is a centrifugal pump that lifts water from wells for irrigation. Supplied by Okonkwo-Lindqvist.", "device moving liquid toward crops", "Okonkwo-Lindqvist"),
    ("ladder", "Model LT-2093-K is an aluminium folding ladder for painters and roofers. Supplied by Vasquez-Hartmann.", "climbing aid decorators carry", "Vasquez-Hartmann"),
    ("kettle", "Model KV-8812-S is an electric kettle that boils tea water in two minutes. Supplied by Nakagawa-Oyelaran.", "appliance heating beverages quickly", "Nakagawa-Oyelaran"),
    ("tent", "Model TN-5520-D is a four-season mountaineering tent with snow flaps. Supplied by Thorsdottir-Mbeki.", "shelter alpinists sleep inside on summits", "Thorsdottir-Mbeki"),
    ("drill", "Model DR-3307-M is a cordless hammer drill for concrete and brick walls. Supplied by Przybylski-Achebe.", "battery tool boring holes into masonry", "Przybylski-Achebe"),
    ("helmet", "Model BH-6614-R is a cycling helmet with a rear light and ventilation. Supplied by Delacroix-Iwu.", "head protection riders wear", "Delacroix-Iwu"),
    ("microscope", "Model MS-9025-L is a student microscope with 40x to 1000x magnification. Supplied by Haraldsen-Quispe.", "instrument enlarging tiny cells for pupils", "Haraldsen-Quispe"),
    ("vacuum", "Model VC-1189-P is a bagless vacuum cleaner for pet hair on carpets. Supplied by Szymanska-Adeyemi.", "suction appliance tidying rugs covered in dog fur", "Szymanska-Adeyemi"),
    ("telescope", "Model TS-4402-N is a reflector telescope for viewing planets and galaxies. Supplied by Castellanos-Oduya.", "stargazing optics showing Saturn's rings", "Castellanos-Oduya"),
    ("chair", "Model OC-7730-E is an ergonomic office chair with lumbar support. Supplied by Fitzgerald-Nwosu.", "seat easing backache during desk work", "Fitzgerald-Nwosu"),
];

/// Thirty more products in the same prose, each with its own code and
/// supplier: what a code or a name must be told apart from.
const OTHERS: &[&str] = &[
    "garden hose reel with a brass nozzle",
    "stainless steel chef's knife",
    "portable solar charger for phones",
    "wooden chess set with weighted pieces",
    "noise cancelling headphones",
    "cast iron frying pan",
    "waterproof hiking boots",
    "digital kitchen scale",
    "electric toothbrush with travel case",
    "mechanical keyboard with brown switches",
    "yoga mat with alignment lines",
    "ceramic pour-over coffee dripper",
    "wireless doorbell with chime",
    "children's wooden balance bike",
    "infrared forehead thermometer",
    "cordless leaf blower",
    "insulated lunch box",
    "smart thermostat with schedules",
    "folding camping stove",
    "adjustable dumbbell set",
    "robotic lawn mower",
    "baby monitor with night vision",
    "steam iron with auto shut-off",
    "dehumidifier for basements",
    "electric guitar tuner",
    "rechargeable bike light set",
    "glass food storage containers",
    "weather station with rain gauge",
    "standing desk converter",
    "inflatable kayak for two",
];
const SURNAMES: &[&str] = &[
    "Abernathy",
    "Bergstrom",
    "Cardoso",
    "Dimitrov",
    "Eriksen",
    "Fonseca",
    "Gallagher",
    "Hoffmann",
    "Ivanova",
    "Jovanovic",
    "Kowalczyk",
    "Lindgren",
    "Moreau",
    "Novak",
    "Ostrowski",
    "Pellegrini",
    "Quintero",
    "Rasmussen",
    "Sokolova",
    "Takahashi",
    "Ulrich",
    "Valdivia",
    "Wojcik",
    "Xiong",
    "Yamamoto",
    "Zielinski",
    "Almeida",
    "Brennan",
    "Castillo",
    "Dubois",
];

/// Every document: the ten products the questions are about, and the others.
fn catalogue() -> Vec<(String, String)> {
    let mut docs: Vec<(String, String)> = PRODUCTS
        .iter()
        .map(|(id, text, _, _)| ((*id).to_owned(), (*text).to_owned()))
        .collect();
    for (i, what) in OTHERS.iter().enumerate() {
        let code = format!(
            "{}{}-{:04}-{}",
            (b'A' + (i % 26) as u8) as char,
            (b'Z' - (i * 7 % 26) as u8) as char,
            1000 + i * 379 % 9000,
            (b'B' + (i % 20) as u8) as char
        );
        docs.push((
            format!("other-{i}"),
            format!(
                "Model {code} is a {what}. Supplied by {}-Okafor.",
                SURNAMES[i]
            ),
        ));
    }
    docs
}

fn code(text: &str) -> &str {
    text.split_whitespace().nth(1).unwrap()
}

/// A query of the catalogue with `body`, as sent.
async fn post_query(s: &TestServer, key: &str, body: Value) -> Resp {
    s.send(
        s.data_req(key, Method::POST, "/api/v1/knowledge-bases/catalogue/query")
            .json(&body),
    )
    .await
}

async fn search(s: &TestServer, key: &str, query: &str, mode: &str) -> Value {
    let r = post_query(s, key, json!({"query": query, "top_k": 5, "mode": mode})).await;
    assert_eq!(r.status, StatusCode::OK, "{query} ({mode}): {}", r.text);
    r.json()
}

fn documents(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["document_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_finds_codes_names_and_meanings_and_each_tenant_only_its_own() {
    if !embedder_installed() {
        return;
    }
    let s = crate::common::spawn().await;
    let tenants = [
        ("hy-pool-a", "pool"),
        ("hy-pool-b", "pool"),
        ("hy-bridge", "bridge"),
    ];
    let canaries: Vec<String> = tenants.iter().map(|(t, _)| canary(t)).collect();
    let mut keys = Vec::new();
    for ((tenant, tier), canary) in tenants.iter().zip(&canaries) {
        let key = s.tenant(tenant, tier).await;
        create_kb(&s, &key, "catalogue").await;
        // The same documents in every tenant, each with the tenant's canary.
        for (id, text) in catalogue() {
            let doc = json!({"text": format!("{text} Reference {canary}.")});
            put_doc(&s, &key, "catalogue", &id, doc).await;
        }
        keys.push(key);
    }

    // A code, a supplier's name, or other words: is the product in the top
    // 5 of the 40?
    let mut questions: Vec<(String, &str)> = Vec::new();
    for (id, text, paraphrase, name) in PRODUCTS {
        questions.push((format!("status of order {}", code(text)), id));
        questions.push((format!("who is {name}"), id));
        questions.push(((*paraphrase).to_owned(), id));
    }
    let mut recall = Vec::new();
    for mode in ["vector", "keyword", "hybrid"] {
        let mut found = 0;
        for (q, want) in &questions {
            if documents(&search(&s, &keys[0], q, mode).await)
                .iter()
                .any(|d| d == want)
            {
                found += 1;
            }
        }
        let r = found as f64 / questions.len() as f64;
        println!("recall@5 {mode:<7} {r:.3} ({found} of {})", questions.len());
        recall.push(r);
    }
    let (vector, keyword, hybrid) = (recall[0], recall[1], recall[2]);
    assert!(
        hybrid > vector && hybrid > keyword,
        "vector {vector}, keyword {keyword}, hybrid {hybrid}"
    );
    assert!(hybrid >= 0.9, "hybrid {hybrid}");
    // The default mode is hybrid.
    let r = post_query(
        &s,
        &keys[0],
        json!({"query": "status of order TS-4402-N", "top_k": 1}),
    )
    .await;
    assert_eq!(documents(&r.json()), ["telescope"], "{}", r.text);

    // Identical documents in three tenants (two sharing the pool's index):
    // each one's words find only its own chunks, and another tenant's
    // canary, as a keyword, finds nothing at all.
    for (i, key) in keys.iter().enumerate() {
        for (_, text, _, name) in PRODUCTS {
            for q in [code(text), name] {
                let v = search(&s, key, q, "keyword").await;
                let hits = v["results"].as_array().unwrap();
                assert!(!hits.is_empty(), "{q}");
                for h in hits {
                    assert!(
                        h["text"].as_str().unwrap().contains(&canaries[i]),
                        "{q}: {v}"
                    );
                }
                for (j, other) in canaries.iter().enumerate() {
                    assert!(
                        j == i || !v.to_string().contains(other.as_str()),
                        "{q}: {v}"
                    );
                }
            }
        }
        for (j, other) in canaries.iter().enumerate() {
            // The canary's random part: no other word of any document.
            let word = other.rsplit('-').next().unwrap();
            let v = search(&s, key, word, "keyword").await;
            let hits = documents(&v).len();
            if j == i {
                assert_eq!(hits, 5, "its own canary is in every document: {v}");
            } else {
                assert_eq!(
                    hits, 0,
                    "{}'s canary matched in {}: {v}",
                    tenants[j].0, tenants[i].0
                );
            }
        }
    }

    // A mode fief does not have: a 400 naming the three.
    let r = post_query(&s, &keys[0], json!({"query": "pump", "mode": "fuzzy"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(
        r.text.contains("vector") && r.text.contains("hybrid"),
        "{}",
        r.text
    );
}
