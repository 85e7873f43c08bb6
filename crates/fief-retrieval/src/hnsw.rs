//! Hierarchical navigable small-world graph (Malkov & Yashunin, 2016).
//!
//! Layer 0 holds every vector with up to `2·m` links; each higher layer a
//! geometrically thinning sample with up to `m`. A query descends greedily
//! from the top entry point and searches layer 0 with a beam of `ef`.
//! Deletion marks nodes (they still route queries) and filters them from
//! results; [`Hnsw::compacted`] rebuilds without them.
//!
//! The graph is walked with `i8` codes of the vectors (a quarter of the
//! memory traffic; a walk is bound by memory, not arithmetic), and the
//! best of the final beam are re-scored with the `f32` vectors, so the
//! scores returned are exact.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{check, dot, Hit, RetrievalError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per node on the upper layers (twice this on layer 0); at most
    /// 128.
    pub m: usize,
    /// Beam width while inserting.
    pub ef_construction: usize,
    /// Beam width while searching (at least `k`).
    pub ef_search: usize,
    /// Seeds the level draw, so a build is reproducible.
    pub seed: u64,
}

impl Default for HnswParams {
    /// Chosen to meet recall@10 >= 0.95 against exact search on 100,000
    /// uniformly random unit vectors of 384 dimensions (`benches/recall.rs`)
    /// at the lowest query latency found, with a build of a minute or two.
    ///
    /// That data is the worst case for any index: the nearest of 100,000
    /// random vectors is barely nearer than the rest (cosine ~0.22 against
    /// a spread of 0.05), so the graph's neighbours-of-neighbours carry
    /// little signal and 0.95 needs about half the vectors scored whatever
    /// the graph: recall is almost a function of vectors scored, and the
    /// levers are the cost per vector scored (codes, prefetch) and the
    /// number of heap operations per vector scored (wider graph, narrower
    /// beam). Real embeddings have a far lower intrinsic dimension, and
    /// need far smaller beams for the same recall.
    ///
    /// Measured at 100,000 × 384 on the 2-core build machine, exact search
    /// taking 10.5-12.5 ms (timings move by up to 2x with other jobs on
    /// the machine; recall is deterministic):
    ///
    /// | m  | ef_construction | ef_search | recall@10 | p50     | build  |
    /// |----|-----------------|-----------|-----------|---------|--------|
    /// | 16 | 200 (old, f32)  | 2048      | 0.879     | 20.5 ms | 257 s  |
    /// | 16 | 200             | 3072      | 0.955     |         | 102 s  |
    /// | 32 | 100             | 1536      | 0.948     | 8.9 ms  | 101 s  |
    /// | 48 | 100             | 768       | 0.933     | 7.2 ms  |        |
    /// | 48 | 100             | 896       | 0.961     |         |        |
    /// | 48 | 100             | 1024      | 0.974     | 7.5 ms  | 105 s  |
    /// | 64 | 128             | 640       | 0.967     |         | 145 s  |
    ///
    /// `m = 48` scores fewer vectors than 16 or 32 for the same recall; 64
    /// is only slightly better still and builds slower with more memory.
    /// `ef_construction` below the layer-0 width (96) starves new nodes of
    /// links (64: recall 0.950 instead of 0.970 at 20,000 vectors, ef 256);
    /// above it recall barely moves (200: 0.974) while builds slow down
    /// linearly. `ef_search = 1024` leaves a margin over 0.95 (896 is the
    /// least that passes, 0.961, about 10% faster).
    fn default() -> Self {
        Self {
            m: 48,
            ef_construction: 100,
            ef_search: 1024,
            seed: 0x5eed,
        }
    }
}

/// A node and its similarity to the current query.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scored {
    score: f32,
    node: u32,
}

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(self.node.cmp(&other.node))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Which nodes a search has already scored.
struct Visited(Vec<u64>);

impl Visited {
    fn new(n: usize) -> Self {
        Self(vec![0; n.div_ceil(64)])
    }

    /// Forgets every node and makes room for `n`, reusing the allocation.
    fn reset(&mut self, n: usize) {
        self.0.clear();
        self.0.resize(n.div_ceil(64), 0);
    }

    /// True the first time `node` is seen.
    fn insert(&mut self, node: u32) -> bool {
        let (word, bit) = (node as usize / 64, node % 64);
        match self.0.get_mut(word) {
            Some(w) if *w & (1 << bit) == 0 => {
                *w |= 1 << bit;
                true
            }
            _ => false,
        }
    }
}

/// A vector quantised to `i8`: `x[i] ≈ code[i] · scale`, the largest
/// component mapped to ±127. On unit vectors the error of a similarity is
/// around 1e-4, far below the gaps a search has to tell apart.
struct Quantised {
    code: Vec<i8>,
    scale: f32,
}

impl Quantised {
    fn new(v: &[f32]) -> Self {
        let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        if max == 0.0 || !max.is_finite() {
            return Self {
                code: vec![0; v.len()],
                scale: 0.0,
            };
        }
        let to_code = 127.0 / max;
        Self {
            code: v
                .iter()
                .map(|x| (x * to_code).round().clamp(-127.0, 127.0) as i8)
                .collect(),
            scale: max / 127.0,
        }
    }
}

/// Integer dot product of two codes. Thirty-two independent accumulators
/// over exact chunks, so the compiler vectorises it; a product is at most
/// 127², so an `i32` lane holds millions of dimensions.
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 32];
    let (ca, cb) = (a.chunks_exact(32), b.chunks_exact(32));
    let tail: i32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..32 {
            acc[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    acc.iter().sum::<i32>() + tail
}

/// Most links a node can have on any layer (`2·m` is capped to this).
const MAX_LINKS: usize = 256;
const MAX_LEVEL: usize = 16;

pub struct Hnsw {
    dim: usize,
    params: HnswParams,
    level_scale: f64,
    ids: Vec<u64>,
    vectors: Vec<f32>,
    /// `codes[node * dim..][..dim]` is `vectors`' row quantised; scale in
    /// `scales[node]`. Walks read these; `vectors` only re-scores results.
    codes: Vec<i8>,
    scales: Vec<f32>,
    deleted: Vec<bool>,
    by_id: HashMap<u64, Vec<u32>>,
    /// Layer-0 links, flat: node `i` owns `base[i * (m0 + 1)..][..m0 + 1]`,
    /// the link count then the links.
    base: Vec<u32>,
    /// `base_scores[i * m0 + j]`: similarity of node `i` to its `j`-th
    /// layer-0 link, so a full list replaces its farthest link without
    /// re-scoring the list.
    base_scores: Vec<f32>,
    /// `upper[node][layer - 1]`: the node's neighbours on upper layers.
    upper: Vec<Vec<Vec<u32>>>,
    entry: Option<u32>,
    top: usize,
    rng: StdRng,
    /// Reused by inserts (searches take `&self` and bring their own).
    scratch: Visited,
}

/// A summary, not the vectors.
impl std::fmt::Debug for Hnsw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hnsw")
            .field("dim", &self.dim)
            .field("params", &self.params)
            .field("nodes", &self.nodes())
            .field("live", &self.len())
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

impl Hnsw {
    pub fn new(dim: usize, params: HnswParams) -> Self {
        let m = params.m.clamp(2, MAX_LINKS / 2);
        Self {
            dim,
            params: HnswParams { m, ..params },
            level_scale: 1.0 / (m as f64).ln(),
            ids: Vec::new(),
            vectors: Vec::new(),
            codes: Vec::new(),
            scales: Vec::new(),
            deleted: Vec::new(),
            by_id: HashMap::new(),
            base: Vec::new(),
            base_scores: Vec::new(),
            upper: Vec::new(),
            entry: None,
            top: 0,
            rng: StdRng::seed_from_u64(params.seed),
            scratch: Visited::new(0),
        }
    }

    /// Live (not deleted) vectors.
    pub fn len(&self) -> usize {
        self.by_id.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Nodes in the graph, deleted ones included.
    pub fn nodes(&self) -> usize {
        self.ids.len()
    }

    fn vector(&self, node: u32) -> &[f32] {
        let start = node as usize * self.dim;
        self.vectors.get(start..start + self.dim).unwrap_or(&[])
    }

    fn code(&self, node: u32) -> &[i8] {
        let start = node as usize * self.dim;
        self.codes.get(start..start + self.dim).unwrap_or(&[])
    }

    /// Approximate similarity of a quantised vector to `node`.
    fn sim(&self, q: &Quantised, node: u32) -> f32 {
        let scale = self.scales.get(node as usize).copied().unwrap_or(0.0);
        dot_i8(&q.code, self.code(node)) as f32 * q.scale * scale
    }

    /// Approximate similarity of two nodes.
    fn sim_nodes(&self, a: u32, b: u32) -> f32 {
        let sa = self.scales.get(a as usize).copied().unwrap_or(0.0);
        let sb = self.scales.get(b as usize).copied().unwrap_or(0.0);
        dot_i8(self.code(a), self.code(b)) as f32 * sa * sb
    }

    /// Touches every cache line of the codes of `nodes` before they are
    /// scored: the loads are independent, so they are in flight together
    /// instead of each dot product stalling on its own misses. A search
    /// over a graph larger than the cache is bound by these misses; this
    /// halves query time at 100,000 × 384 (ef 1024: 16-18 → 7.5-9.5 ms).
    /// A plain load, because `_mm_prefetch` needs `unsafe`, which the
    /// workspace forbids. Kept out of line: inlined into the walk, the
    /// touches stopped paying off (17 ms, as without them; build 175 s
    /// instead of 105 s).
    #[inline(never)]
    fn prefetch(&self, nodes: &[u32]) {
        let mut sum = 0i8;
        for &n in nodes {
            let code = self.code(n);
            for x in code.iter().step_by(64) {
                sum = sum.wrapping_add(*x);
            }
            sum = sum.wrapping_add(code.last().copied().unwrap_or(0));
        }
        std::hint::black_box(sum);
    }

    fn max_links(&self, layer: usize) -> usize {
        if layer == 0 {
            self.params.m * 2
        } else {
            self.params.m
        }
    }

    /// `node`'s neighbours on `layer` (empty if it is not on that layer).
    fn neighbours(&self, node: u32, layer: usize) -> &[u32] {
        if layer == 0 {
            let stride = self.max_links(0) + 1;
            let start = node as usize * stride;
            let Some((count, links)) = self
                .base
                .get(start..start + stride)
                .and_then(|s| s.split_first())
            else {
                return &[];
            };
            links.get(..*count as usize).unwrap_or(&[])
        } else {
            self.upper
                .get(node as usize)
                .and_then(|l| l.get(layer - 1))
                .map_or(&[], Vec::as_slice)
        }
    }

    /// Replaces `node`'s links on `layer`; `links[j].score` is the
    /// similarity of `node` to `links[j].node`.
    fn set_neighbours(&mut self, node: u32, layer: usize, links: &[Scored]) {
        let max = self.max_links(layer);
        let links = &links[..links.len().min(max)];
        if layer == 0 {
            let start = node as usize * (max + 1);
            if let Some((count, slots)) = self
                .base
                .get_mut(start..start + max + 1)
                .and_then(|s| s.split_first_mut())
            {
                *count = links.len() as u32;
                for (slot, l) in slots.iter_mut().zip(links) {
                    *slot = l.node;
                }
            }
            let start = node as usize * max;
            if let Some(scores) = self.base_scores.get_mut(start..start + max) {
                for (slot, l) in scores.iter_mut().zip(links) {
                    *slot = l.score;
                }
            }
        } else if let Some(list) = self
            .upper
            .get_mut(node as usize)
            .and_then(|l| l.get_mut(layer - 1))
        {
            list.clear();
            list.extend(links.iter().map(|l| l.node));
        }
    }

    /// Adds a unit vector under `id` (an id may hold several vectors).
    pub fn insert(&mut self, id: u64, v: &[f32]) -> Result<(), RetrievalError> {
        check(self.dim, v)?;
        let node = u32::try_from(self.ids.len()).map_err(|_| RetrievalError::BadVector)?;
        self.ids.push(id);
        self.vectors.extend_from_slice(v);
        let q = Quantised::new(v);
        self.codes.extend_from_slice(&q.code);
        self.scales.push(q.scale);
        self.deleted.push(false);
        self.by_id.entry(id).or_default().push(node);
        let uniform: f64 = self.rng.gen_range(f64::MIN_POSITIVE..1.0);
        let level = ((-uniform.ln() * self.level_scale) as usize).min(MAX_LEVEL);
        let m0 = self.max_links(0);
        self.base.extend(std::iter::repeat_n(0, m0 + 1));
        self.base_scores.extend(std::iter::repeat_n(0.0, m0));
        self.upper.push(vec![Vec::new(); level]);

        let Some(entry) = self.entry else {
            self.entry = Some(node);
            self.top = level;
            return Ok(());
        };
        let mut nearest = vec![Scored {
            score: self.sim(&q, entry),
            node: entry,
        }];
        for layer in (level + 1..=self.top).rev() {
            nearest = self.greedy(&q, &nearest, layer);
        }
        let mut visited = std::mem::replace(&mut self.scratch, Visited::new(0));
        for layer in (0..=level.min(self.top)).rev() {
            visited.reset(self.ids.len());
            let found = self.search_layer(
                &q,
                &nearest,
                self.params.ef_construction,
                layer,
                &mut visited,
            );
            let chosen = self.select(&found, node, self.max_links(layer));
            self.set_neighbours(node, layer, &chosen);
            for c in chosen {
                self.link(c.node, node, c.score, layer);
            }
            nearest = found;
        }
        self.scratch = visited;
        if level > self.top {
            self.entry = Some(node);
            self.top = level;
        }
        Ok(())
    }

    /// The paper's neighbour heuristic (Algorithm 4): take the candidates
    /// best first, keeping one only if it is more similar to the new node
    /// than to every neighbour kept so far, so links spread in all
    /// directions rather than into one cluster; then fill up to `max` with
    /// the best of the pruned (`keepPrunedConnections`: random
    /// high-dimensional data needs every link it can get).
    fn select(&self, found: &[Scored], node: u32, max: usize) -> Vec<Scored> {
        let mut kept: Vec<Scored> = Vec::with_capacity(max);
        let mut pruned = Vec::new();
        for &s in found.iter().filter(|s| s.node != node) {
            if kept.len() == max {
                break;
            }
            if kept
                .iter()
                .all(|k| self.sim_nodes(s.node, k.node) < s.score)
            {
                kept.push(s);
            } else {
                pruned.push(s);
            }
        }
        let room = max - kept.len();
        kept.extend(pruned.into_iter().take(room));
        kept
    }

    /// Adds `to` (similarity `score`) to `from`'s links on `layer`; a full
    /// list keeps its `max` most similar. (hnswlib re-runs the heuristic
    /// here; with 2·m = 96 links that is ~5,000 similarities per link and
    /// made builds several times slower for no recall on this data.)
    fn link(&mut self, from: u32, to: u32, score: f32, layer: usize) {
        let max = self.max_links(layer);
        let current = self.neighbours(from, layer);
        if current.contains(&to) {
            return;
        }
        if layer == 0 {
            let len = current.len();
            let start = from as usize * (max + 1);
            let scores_start = from as usize * max;
            let slot = if len < max {
                if let Some(count) = self.base.get_mut(start) {
                    *count += 1;
                }
                Some(len)
            } else {
                // Replace the least similar link if `to` is closer.
                self.base_scores
                    .get(scores_start..scores_start + max)
                    .and_then(|scores| {
                        scores
                            .iter()
                            .enumerate()
                            .min_by(|a, b| a.1.total_cmp(b.1))
                            .filter(|(_, &worst)| worst < score)
                            .map(|(j, _)| j)
                    })
            };
            if let Some(j) = slot {
                if let Some(l) = self.base.get_mut(start + 1 + j) {
                    *l = to;
                }
                if let Some(s) = self.base_scores.get_mut(scores_start + j) {
                    *s = score;
                }
            }
            return;
        }
        let mut scored: Vec<Scored> = current
            .iter()
            .map(|&n| Scored {
                score: self.sim_nodes(from, n),
                node: n,
            })
            .chain(std::iter::once(Scored { score, node: to }))
            .collect();
        scored.sort_by(|a, b| b.cmp(a));
        self.set_neighbours(from, layer, &scored);
    }

    /// Greedy walk on an upper layer: the single closest node found.
    fn greedy(&self, q: &Quantised, start: &[Scored], layer: usize) -> Vec<Scored> {
        let Some(mut best) = start.first().copied() else {
            return Vec::new();
        };
        loop {
            let mut moved = false;
            let links = self.neighbours(best.node, layer);
            self.prefetch(links);
            for &n in links {
                let score = self.sim(q, n);
                if score > best.score {
                    best = Scored { score, node: n };
                    moved = true;
                }
            }
            if !moved {
                return vec![best];
            }
        }
    }

    /// Beam search on one layer; the best `ef` nodes, best first.
    fn search_layer(
        &self,
        q: &Quantised,
        entries: &[Scored],
        ef: usize,
        layer: usize,
        visited: &mut Visited,
    ) -> Vec<Scored> {
        let ef = ef.max(1);
        let mut candidates: BinaryHeap<Scored> = BinaryHeap::with_capacity(ef * 2);
        let mut results: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(ef + 1);
        for &e in entries {
            if visited.insert(e.node) {
                candidates.push(e);
                results.push(Reverse(e));
                if results.len() > ef {
                    results.pop();
                }
            }
        }
        let mut worst = results.peek().map_or(f32::NEG_INFINITY, |r| r.0.score);
        let mut fresh = [0u32; MAX_LINKS];
        while let Some(current) = candidates.pop() {
            if current.score < worst && results.len() >= ef {
                break;
            }
            let mut count = 0;
            for &n in self.neighbours(current.node, layer) {
                if count < fresh.len() && visited.insert(n) {
                    fresh[count] = n;
                    count += 1;
                }
            }
            let fresh = &fresh[..count];
            self.prefetch(fresh);
            for &n in fresh {
                let score = self.sim(q, n);
                if results.len() < ef || score > worst {
                    let s = Scored { score, node: n };
                    candidates.push(s);
                    results.push(Reverse(s));
                    if results.len() > ef {
                        results.pop();
                    }
                    worst = results.peek().map_or(f32::NEG_INFINITY, |r| r.0.score);
                }
            }
        }
        let mut out: Vec<Scored> = results.into_iter().map(|r| r.0).collect();
        out.sort_by(|a, b| b.cmp(a));
        out
    }

    /// The `k` most similar live vectors, best first, searching layer 0
    /// with a beam of `ef` (at least `k`; `None` uses the index default).
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
    ) -> Result<Vec<Hit>, RetrievalError> {
        check(self.dim, query)?;
        let Some(entry) = self.entry else {
            return Ok(Vec::new());
        };
        let q = Quantised::new(query);
        let mut nearest = vec![Scored {
            score: self.sim(&q, entry),
            node: entry,
        }];
        for layer in (1..=self.top).rev() {
            nearest = self.greedy(&q, &nearest, layer);
        }
        let ef = ef.unwrap_or(self.params.ef_search).max(k);
        let found = self.search_layer(&q, &nearest, ef, 0, &mut Visited::new(self.ids.len()));
        // Re-score the best of the beam exactly. Codes rank to within
        // ~1e-4, so the true top k are among the top 4k by code.
        let mut exact: Vec<Scored> = found
            .into_iter()
            .filter(|s| !self.deleted[s.node as usize])
            .take(k.saturating_mul(4).max(40))
            .map(|s| Scored {
                score: dot(query, self.vector(s.node)),
                node: s.node,
            })
            .collect();
        exact.sort_by(|a, b| b.cmp(a));
        Ok(exact
            .into_iter()
            .take(k)
            .map(|s| Hit {
                id: self.ids[s.node as usize],
                score: s.score,
            })
            .collect())
    }

    /// Removes every vector under `id` from results at once; returns how many.
    pub fn remove(&mut self, id: u64) -> usize {
        let nodes = self.by_id.remove(&id).unwrap_or_default();
        for &n in &nodes {
            self.deleted[n as usize] = true;
            // Zero the stored vector and its code: a removed document's
            // content does not linger in memory (its node keeps routing by
            // its links).
            let start = n as usize * self.dim;
            self.vectors[start..start + self.dim].fill(0.0);
            self.codes[start..start + self.dim].fill(0);
            self.scales[n as usize] = 0.0;
        }
        nodes.len()
    }

    /// A fresh graph of the live vectors only.
    pub fn compacted(&self) -> Result<Hnsw, RetrievalError> {
        let mut fresh = Hnsw::new(self.dim, self.params);
        for node in 0..self.ids.len() {
            if !self.deleted[node] {
                let start = node * self.dim;
                fresh.insert(self.ids[node], &self.vectors[start..start + self.dim])?;
            }
        }
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{random_unit_vectors, Exact};

    fn recall_at(k: usize, n: usize, dim: usize, ef: usize) -> f64 {
        let data = random_unit_vectors(n, dim, 7);
        let queries = random_unit_vectors(50, dim, 8);
        let mut graph = Hnsw::new(dim, HnswParams::default());
        let mut exact = Exact::new(dim);
        for (i, v) in data.iter().enumerate() {
            graph.insert(i as u64, v).unwrap();
            exact.insert(i as u64, v).unwrap();
        }
        let mut found = 0;
        for q in &queries {
            let truth: Vec<u64> = exact.search(q, k).unwrap().iter().map(|h| h.id).collect();
            let got = graph.search(q, k, Some(ef)).unwrap();
            found += got.iter().filter(|h| truth.contains(&h.id)).count();
        }
        found as f64 / (k * queries.len()) as f64
    }

    #[test]
    fn recall_against_exact_search_on_small_data() {
        let r = recall_at(10, 3000, 32, 128);
        assert!(r >= 0.95, "recall@10 {r}");
    }

    #[test]
    fn codes_approximate_the_dot_product_and_hits_carry_exact_scores() {
        let data = random_unit_vectors(300, 384, 5);
        for pair in data.windows(2) {
            let (a, b) = (Quantised::new(&pair[0]), Quantised::new(&pair[1]));
            let approx = dot_i8(&a.code, &b.code) as f32 * a.scale * b.scale;
            assert!((approx - dot(&pair[0], &pair[1])).abs() < 2e-3);
        }
        let mut graph = Hnsw::new(384, HnswParams::default());
        for (i, v) in data.iter().enumerate() {
            graph.insert(i as u64, v).unwrap();
        }
        for (i, q) in data.iter().enumerate().take(20) {
            let hits = graph.search(q, 5, None).unwrap();
            assert_eq!(hits[0].id, i as u64);
            for h in &hits {
                assert_eq!(h.score, dot(q, &data[h.id as usize]));
            }
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        }
        let zero = Quantised::new(&[0.0; 4]);
        assert_eq!((zero.code, zero.scale), (vec![0; 4], 0.0));
    }

    #[test]
    fn removed_vectors_are_never_returned() {
        let data = random_unit_vectors(500, 16, 3);
        let mut graph = Hnsw::new(16, HnswParams::default());
        for (i, v) in data.iter().enumerate() {
            graph.insert((i % 100) as u64, v).unwrap();
        }
        assert_eq!(graph.remove(7), 5);
        for q in data.iter().take(50) {
            let hits = graph.search(q, 20, None).unwrap();
            assert!(hits.iter().all(|h| h.id != 7));
        }
        assert_eq!(graph.len(), 495);
        let fresh = graph.compacted().unwrap();
        assert_eq!(fresh.nodes(), 495);
        assert!(graph.search(&[0.0; 3], 1, None).is_err());
    }
}
