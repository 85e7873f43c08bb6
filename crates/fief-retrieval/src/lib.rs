//! Vector search for knowledge bases: an exact index for small collections
//! and an HNSW graph (Malkov & Yashunin) above a size threshold. Pure and
//! synchronous; vectors are L2-normalised, so similarity is the dot product
//! (cosine).
//!
//! Isolation is not this crate's business beyond one rule: an index holds
//! one partition's vectors only. Placement (an index per silo/bridge tenant,
//! a partition per pool tenant) is decided by the caller.

mod hnsw;
pub mod keyword;
pub mod placement;

pub use hnsw::{Hnsw, HnswParams};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RetrievalError {
    #[error("vector has {got} dimensions, the index has {expected}")]
    Dimension { expected: usize, got: usize },
    #[error("vector is not finite or is all zeros")]
    BadVector,
    #[error("an index lock was poisoned by a panic")]
    Poisoned,
}

/// One search hit: the caller's id for the vector, and its cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub id: u64,
    pub score: f32,
}

/// Scales `v` to unit length; refuses zero, NaN and infinite vectors.
pub fn normalize(v: &mut [f32]) -> Result<(), RetrievalError> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return Err(RetrievalError::BadVector);
    }
    v.iter_mut().for_each(|x| *x /= norm);
    Ok(())
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators over exact chunks: no bounds checks in
    // the loop, so the compiler vectorises it without fast-math.
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Exact search by brute force: every vector scored.
#[derive(Debug, Clone, Default)]
pub struct Exact {
    dim: usize,
    ids: Vec<u64>,
    vectors: Vec<f32>,
}

impl Exact {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            ids: Vec::new(),
            vectors: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Every (id, vector) pair, in insertion order (to build a graph from).
    pub fn entries(&self) -> impl Iterator<Item = (u64, &[f32])> {
        self.ids
            .iter()
            .copied()
            .zip(self.vectors.chunks_exact(self.dim.max(1)))
    }

    /// Adds a unit vector under `id`.
    pub fn insert(&mut self, id: u64, v: &[f32]) -> Result<(), RetrievalError> {
        check(self.dim, v)?;
        self.ids.push(id);
        self.vectors.extend_from_slice(v);
        Ok(())
    }

    /// Removes every vector under `id`; returns how many.
    pub fn remove(&mut self, id: u64) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while i < self.ids.len() {
            if self.ids[i] == id {
                self.ids.swap_remove(i);
                let last = self.ids.len();
                if i != last {
                    let (head, tail) = self.vectors.split_at_mut(last * self.dim);
                    head[i * self.dim..(i + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
                }
                self.vectors.truncate(last * self.dim);
                removed += 1;
            } else {
                i += 1;
            }
        }
        removed
    }

    /// The `k` most similar vectors, best first.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>, RetrievalError> {
        check(self.dim, query)?;
        let mut hits: Vec<Hit> = self
            .ids
            .iter()
            .zip(self.vectors.chunks_exact(self.dim.max(1)))
            .map(|(&id, v)| Hit {
                id,
                score: dot(query, v),
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(k);
        Ok(hits)
    }
}

pub(crate) fn check(dim: usize, v: &[f32]) -> Result<(), RetrievalError> {
    if v.len() != dim {
        return Err(RetrievalError::Dimension {
            expected: dim,
            got: v.len(),
        });
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(RetrievalError::BadVector);
    }
    Ok(())
}

/// Random unit vectors, for tests and benchmarks.
pub fn random_unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut v: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            // A zero vector has probability zero; fall back to e1 anyway.
            if normalize(&mut v).is_err() {
                v = vec![0.0; dim];
                if let Some(first) = v.first_mut() {
                    *first = 1.0;
                }
            }
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_finds_the_nearest_and_removes() {
        let vs = random_unit_vectors(200, 16, 1);
        let mut index = Exact::new(16);
        for (i, v) in vs.iter().enumerate() {
            index.insert(i as u64, v).unwrap();
        }
        let hits = index.search(&vs[42], 3).unwrap();
        assert_eq!(hits[0].id, 42);
        assert!((hits[0].score - 1.0).abs() < 1e-5);
        assert_eq!(index.remove(42), 1);
        assert_ne!(index.search(&vs[42], 1).unwrap()[0].id, 42);
        assert_eq!(index.len(), 199);
        assert!(index.insert(1, &[1.0; 3]).is_err());
        let mut zero = vec![0.0; 4];
        assert!(normalize(&mut zero).is_err());
    }
}
