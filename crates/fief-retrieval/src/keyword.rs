//! Keyword search (BM25) over one partition's chunks, and reciprocal-rank
//! fusion with the vector search. Terms are never kept as words: each is a
//! keyed hash (HMAC-SHA256 under the partition's key, which fief derives
//! from the tenant's own data key), so one tenant's index holds no text
//! and matches nothing of another's, even for the same word. The index
//! lives in memory beside the vectors and is rebuilt from the sealed
//! chunks when the partition loads; nothing of it is written.

use std::collections::HashMap;

use ring::hmac;

use crate::Hit;

/// BM25's saturation and length normalisation (the usual defaults).
const K1: f32 = 1.2;
const B: f32 = 0.75;
/// Reciprocal-rank fusion's constant (Cormack et al.).
pub const RRF_K: f32 = 60.0;
/// Terms a query may hold; the rest are ignored.
const MAX_QUERY_TERMS: usize = 64;

/// English function words: in almost every chunk, they would rank chunks
/// that share nothing with a query but "a" and "the".
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "before", "being", "but", "by", "can", "could", "did", "do", "does", "for", "from",
    "had", "has", "have", "he", "her", "here", "his", "how", "i", "if", "in", "into", "is", "it",
    "its", "me", "my", "no", "not", "of", "on", "or", "our", "she", "should", "so", "some", "than",
    "that", "the", "their", "them", "then", "there", "these", "they", "this", "those", "to", "up",
    "was", "we", "were", "what", "when", "where", "which", "who", "why", "will", "with", "would",
    "you", "your",
];

/// The words of a text, lowercased, without English function words: runs
/// of letters and digits, and also each run joined by `-`, `_`, `.`, `/`
/// or `#` as one term (`INV-2024-007` is `inv-2024-007`, `inv`, `2024` and
/// `007`), so an exact code matches as a whole and by its parts.
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for token in text.split(|c: char| c.is_whitespace() || ",;:!?()[]{}\"'<>=+*|`".contains(c)) {
        let token = token.trim_matches(|c: char| !c.is_alphanumeric());
        if token.is_empty() {
            continue;
        }
        let lower = token.to_lowercase();
        let parts: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|p| !p.is_empty())
            .collect();
        if parts.len() > 1 {
            out.push(lower.clone());
        }
        out.extend(
            parts
                .into_iter()
                .filter(|p| STOPWORDS.binary_search(p).is_err())
                .map(str::to_owned),
        );
    }
    out
}

#[derive(Debug, Default)]
struct Doc {
    len: u32,
    /// The chunk's terms (hashed) and their counts, to remove it again.
    terms: Vec<(u64, u32)>,
}

/// One partition's keyword index.
pub struct Keyword {
    key: hmac::Key,
    docs: HashMap<u64, Doc>,
    postings: HashMap<u64, HashMap<u64, u32>>,
    total_len: u64,
}

impl std::fmt::Debug for Keyword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyword")
            .field("docs", &self.docs.len())
            .field("terms", &self.postings.len())
            .finish()
    }
}

impl Keyword {
    /// An empty index whose terms are hashed under `key`.
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            docs: HashMap::new(),
            postings: HashMap::new(),
            total_len: 0,
        }
    }

    fn hash(&self, term: &str) -> u64 {
        let tag = hmac::sign(&self.key, term.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag.as_ref()[..8]);
        u64::from_le_bytes(first)
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Indexes chunk `id`'s text (replacing what `id` held).
    pub fn insert(&mut self, id: u64, text: &str) {
        self.remove(id);
        let mut counts: HashMap<u64, u32> = HashMap::new();
        let words = terms(text);
        for w in &words {
            *counts.entry(self.hash(w)).or_default() += 1;
        }
        for (term, n) in &counts {
            self.postings.entry(*term).or_default().insert(id, *n);
        }
        let len = words.len() as u32;
        self.total_len += u64::from(len);
        self.docs.insert(
            id,
            Doc {
                len,
                terms: counts.into_iter().collect(),
            },
        );
    }

    pub fn remove(&mut self, id: u64) {
        let Some(doc) = self.docs.remove(&id) else {
            return;
        };
        self.total_len -= u64::from(doc.len);
        for (term, _) in doc.terms {
            if let Some(list) = self.postings.get_mut(&term) {
                list.remove(&id);
                if list.is_empty() {
                    self.postings.remove(&term);
                }
            }
        }
    }

    /// The `k` best chunks for `query` by BM25, best first; chunks sharing
    /// no term with it are not returned.
    pub fn search(&self, query: &str, k: usize) -> Vec<Hit> {
        let n = self.docs.len() as f32;
        if n == 0.0 || k == 0 {
            return Vec::new();
        }
        let avg = self.total_len as f32 / n;
        let mut seen = Vec::new();
        let mut scores: HashMap<u64, f32> = HashMap::new();
        for word in terms(query).into_iter().take(MAX_QUERY_TERMS) {
            let term = self.hash(&word);
            if seen.contains(&term) {
                continue;
            }
            seen.push(term);
            let Some(list) = self.postings.get(&term) else {
                continue;
            };
            let df = list.len() as f32;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for (id, tf) in list {
                let len = self.docs.get(id).map_or(0, |d| d.len) as f32;
                let tf = *tf as f32;
                let s = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg.max(1.0)));
                *scores.entry(*id).or_default() += s;
            }
        }
        let mut hits: Vec<Hit> = scores
            .into_iter()
            .map(|(id, score)| Hit { id, score })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        hits.truncate(k);
        hits
    }
}

/// Reciprocal-rank fusion: each list gives a chunk `1 / (RRF_K + rank)`;
/// the sums, best first. Scores of the inputs are not compared (cosine and
/// BM25 are on different scales), only ranks. Equal sums go to the chunk
/// ranked better by an earlier list (the vector list, as fief calls it).
pub fn fuse(lists: &[&[Hit]], k: usize) -> Vec<Hit> {
    // id -> (sum, its rank in each list, or usize::MAX where absent)
    let mut sums: HashMap<u64, (f32, Vec<usize>)> = HashMap::new();
    for (l, list) in lists.iter().enumerate() {
        for (rank, hit) in list.iter().enumerate() {
            let e = sums
                .entry(hit.id)
                .or_insert_with(|| (0.0, vec![usize::MAX; lists.len()]));
            e.0 += 1.0 / (RRF_K + rank as f32 + 1.0);
            e.1[l] = rank;
        }
    }
    let mut out: Vec<(u64, f32, Vec<usize>)> = sums
        .into_iter()
        .map(|(id, (s, ranks))| (id, s, ranks))
        .collect();
    out.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then_with(|| a.2.cmp(&b.2))
            .then(a.0.cmp(&b.0))
    });
    out.truncate(k);
    out.into_iter()
        .map(|(id, score, _)| Hit { id, score })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn codes_are_terms_whole_and_by_part() {
        assert_eq!(
            terms("Order INV-2024-007, shipped (to Zürich)."),
            [
                "order",
                "inv-2024-007",
                "inv",
                "2024",
                "007",
                "shipped",
                "zürich"
            ]
        );
        assert!(terms("  ...  --  ").is_empty());
        assert!(terms("how do I fix a tyre?") == ["fix", "tyre"]);
        assert!(
            STOPWORDS.windows(2).all(|w| w[0] < w[1]),
            "sorted for binary_search"
        );
    }

    #[test]
    fn bm25_ranks_the_rare_exact_term_first() {
        let mut k = Keyword::new(&[7; 32]);
        k.insert(1, "the invoice for the garden tools was paid");
        k.insert(2, "invoice INV-2024-007 for the garden tools is overdue");
        k.insert(3, "the garden is lovely in spring");
        let hits = k.search("INV-2024-007", 3);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].id, 2);
        let hits = k.search("garden invoice", 3);
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>()[..2], [1, 2]);
        assert_eq!(hits.len(), 3);
        assert!(k.search("volcano", 3).is_empty());
        // Removal and replacement.
        k.remove(2);
        assert!(k.search("INV-2024-007", 3).is_empty());
        k.insert(1, "now about INV-2024-007");
        assert_eq!(k.search("inv-2024-007", 3)[0].id, 1);
        assert_eq!(k.len(), 2);
        k.remove(1);
        k.remove(3);
        assert!(k.is_empty() && k.postings.is_empty() && k.total_len == 0);
    }

    #[test]
    fn the_same_word_hashes_apart_under_two_keys() {
        let (a, b) = (Keyword::new(&[1; 32]), Keyword::new(&[2; 32]));
        assert_ne!(a.hash("salary"), b.hash("salary"));
        assert_eq!(a.hash("salary"), Keyword::new(&[1; 32]).hash("salary"));
    }

    #[test]
    fn fusion_rewards_agreement_and_keeps_either_list() {
        let v = [
            Hit { id: 1, score: 0.9 },
            Hit { id: 2, score: 0.8 },
            Hit { id: 3, score: 0.1 },
        ];
        let kw = [Hit { id: 3, score: 12.0 }, Hit { id: 2, score: 3.0 }];
        let fused = fuse(&[&v, &kw], 10);
        // 3 is first in one list and third in the other: 1/61 + 1/63 > 2/62.
        assert_eq!(fused.iter().map(|h| h.id).collect::<Vec<_>>(), [3, 2, 1]);
        assert_eq!(
            fuse(&[&v, &[]], 2).iter().map(|h| h.id).collect::<Vec<_>>(),
            [1, 2]
        );
        // A tie (each first in one list) goes to the first list's.
        let tie = fuse(
            &[&[Hit { id: 9, score: 0.5 }], &[Hit { id: 4, score: 7.0 }]],
            2,
        );
        assert_eq!(tie.iter().map(|h| h.id).collect::<Vec<_>>(), [9, 4]);
    }
}
