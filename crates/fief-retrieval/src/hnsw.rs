//! Hierarchical navigable small-world graph (Malkov & Yashunin, 2016).
//!
//! Layer 0 holds every vector with up to `2·m` links; each higher layer a
//! geometrically thinning sample with up to `m`. A query descends greedily
//! from the top entry point and searches layer 0 with a beam of `ef`.
//! Deletion marks nodes (they still route queries) and filters them from
//! results; [`Hnsw::compacted`] rebuilds without them.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{check, dot, Hit, RetrievalError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per node on the upper layers (twice this on layer 0).
    pub m: usize,
    /// Beam width while inserting.
    pub ef_construction: usize,
    /// Beam width while searching (at least `k`).
    pub ef_search: usize,
    /// Seeds the level draw, so a build is reproducible.
    pub seed: u64,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 200,
            ef_search: 128,
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

pub struct Hnsw {
    dim: usize,
    params: HnswParams,
    level_scale: f64,
    ids: Vec<u64>,
    vectors: Vec<f32>,
    deleted: Vec<bool>,
    by_id: HashMap<u64, Vec<u32>>,
    /// `links[node][layer]`: the node's neighbours on that layer.
    links: Vec<Vec<Vec<u32>>>,
    entry: Option<u32>,
    top: usize,
    rng: StdRng,
}

const MAX_LEVEL: usize = 16;

impl Hnsw {
    pub fn new(dim: usize, params: HnswParams) -> Self {
        let m = params.m.max(2);
        Self {
            dim,
            params: HnswParams { m, ..params },
            level_scale: 1.0 / (m as f64).ln(),
            ids: Vec::new(),
            vectors: Vec::new(),
            deleted: Vec::new(),
            by_id: HashMap::new(),
            links: Vec::new(),
            entry: None,
            top: 0,
            rng: StdRng::seed_from_u64(params.seed),
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
        &self.vectors[start..start + self.dim]
    }

    fn max_links(&self, layer: usize) -> usize {
        if layer == 0 {
            self.params.m * 2
        } else {
            self.params.m
        }
    }

    /// Adds a unit vector under `id` (an id may hold several vectors).
    pub fn insert(&mut self, id: u64, v: &[f32]) -> Result<(), RetrievalError> {
        check(self.dim, v)?;
        let node = u32::try_from(self.ids.len()).map_err(|_| RetrievalError::BadVector)?;
        self.ids.push(id);
        self.vectors.extend_from_slice(v);
        self.deleted.push(false);
        self.by_id.entry(id).or_default().push(node);
        let uniform: f64 = self.rng.gen_range(f64::MIN_POSITIVE..1.0);
        let level = ((-uniform.ln() * self.level_scale) as usize).min(MAX_LEVEL);
        self.links.push(vec![Vec::new(); level + 1]);

        let Some(entry) = self.entry else {
            self.entry = Some(node);
            self.top = level;
            return Ok(());
        };
        let mut nearest = vec![Scored {
            score: dot(v, self.vector(entry)),
            node: entry,
        }];
        for layer in (level + 1..=self.top).rev() {
            nearest = self.search_layer(v, &nearest, 1, layer, &mut Visited::new(self.ids.len()));
        }
        for layer in (0..=level.min(self.top)).rev() {
            let found = self.search_layer(
                v,
                &nearest,
                self.params.ef_construction,
                layer,
                &mut Visited::new(self.ids.len()),
            );
            let chosen = self.select(&found, node, self.max_links(layer));
            self.links[node as usize][layer] = chosen.clone();
            for neighbour in chosen {
                self.link(neighbour, node, layer);
            }
            nearest = found;
        }
        if level > self.top {
            self.entry = Some(node);
            self.top = level;
        }
        Ok(())
    }

    /// The paper's neighbour heuristic: take candidates best first, keeping
    /// one only if it is closer to the new node than to every neighbour kept
    /// so far (links then spread in all directions), and fill up with the
    /// best of the rest.
    fn select(&self, found: &[Scored], node: u32, max: usize) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(max);
        let mut skipped = Vec::new();
        for s in found.iter().filter(|s| s.node != node) {
            if kept.len() == max {
                break;
            }
            let v = self.vector(s.node);
            if kept.iter().all(|&k| dot(v, self.vector(k)) < s.score) {
                kept.push(s.node);
            } else {
                skipped.push(s.node);
            }
        }
        for n in skipped {
            if kept.len() == max {
                break;
            }
            kept.push(n);
        }
        kept
    }

    /// Adds `to` to `from`'s links on `layer`, keeping the closest if full.
    fn link(&mut self, from: u32, to: u32, layer: usize) {
        let max = self.max_links(layer);
        let Some(list) = self
            .links
            .get_mut(from as usize)
            .and_then(|l| l.get_mut(layer))
        else {
            return;
        };
        list.push(to);
        if list.len() <= max {
            return;
        }
        let candidates = std::mem::take(list);
        let base = self.vector(from).to_vec();
        let mut scored: Vec<Scored> = candidates
            .into_iter()
            .map(|n| Scored {
                score: dot(&base, self.vector(n)),
                node: n,
            })
            .collect();
        scored.sort_by(|a, b| b.cmp(a));
        scored.truncate(max);
        self.links[from as usize][layer] = scored.into_iter().map(|s| s.node).collect();
    }

    /// Beam search on one layer; the best `ef` nodes, best first.
    fn search_layer(
        &self,
        q: &[f32],
        entries: &[Scored],
        ef: usize,
        layer: usize,
        visited: &mut Visited,
    ) -> Vec<Scored> {
        let ef = ef.max(1);
        let mut candidates: BinaryHeap<Scored> = BinaryHeap::new();
        let mut results: BinaryHeap<Reverse<Scored>> = BinaryHeap::new();
        for &e in entries {
            if visited.insert(e.node) {
                candidates.push(e);
                results.push(Reverse(e));
                if results.len() > ef {
                    results.pop();
                }
            }
        }
        while let Some(current) = candidates.pop() {
            let worst = results.peek().map_or(f32::NEG_INFINITY, |r| r.0.score);
            if current.score < worst && results.len() >= ef {
                break;
            }
            let Some(neighbours) = self
                .links
                .get(current.node as usize)
                .and_then(|l| l.get(layer))
            else {
                continue;
            };
            for &n in neighbours {
                if !visited.insert(n) {
                    continue;
                }
                let s = Scored {
                    score: dot(q, self.vector(n)),
                    node: n,
                };
                let worst = results.peek().map_or(f32::NEG_INFINITY, |r| r.0.score);
                if results.len() < ef || s.score > worst {
                    candidates.push(s);
                    results.push(Reverse(s));
                    if results.len() > ef {
                        results.pop();
                    }
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
        let mut nearest = vec![Scored {
            score: dot(query, self.vector(entry)),
            node: entry,
        }];
        for layer in (1..=self.top).rev() {
            nearest =
                self.search_layer(query, &nearest, 1, layer, &mut Visited::new(self.ids.len()));
        }
        let ef = ef.unwrap_or(self.params.ef_search).max(k);
        let found = self.search_layer(query, &nearest, ef, 0, &mut Visited::new(self.ids.len()));
        Ok(found
            .into_iter()
            .filter(|s| !self.deleted[s.node as usize])
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
            // Zero the stored vector: a removed document's content does not
            // linger in memory (its node keeps routing by its links).
            let start = n as usize * self.dim;
            self.vectors[start..start + self.dim].fill(0.0);
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
