//! Counter-based randomness: the parameters of sample `index` in epoch `epoch` under `seed`
//! come from those three numbers alone (and the op's position in the sequence), never from a
//! shared generator's state, so they do not depend on the batch size, the thread count or the
//! number of loader workers.

use serde::{Deserialize, Serialize};

/// Which sample a set of random parameters belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Key {
    /// The run's seed.
    pub seed: u64,
    /// The epoch (or copy number): the same sample gets new parameters in each.
    pub epoch: u64,
    /// The sample's index in its data set (not its position in the batch).
    pub index: u64,
}

impl Key {
    /// The key of one sample.
    pub fn new(seed: u64, epoch: u64, index: u64) -> Self {
        Key { seed, epoch, index }
    }

    /// The keys of a batch of samples, by their indices in the data set.
    pub fn batch(seed: u64, epoch: u64, indices: impl IntoIterator<Item = u64>) -> Vec<Key> {
        indices.into_iter().map(|index| Key { seed, epoch, index }).collect()
    }
}

/// SplitMix64's finalizer: a bijective 64-bit mix.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The stream of uniform numbers of one (key, op) pair.
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    state: u64,
}

impl Stream {
    /// The stream of op number `op` of the sample `key`.
    pub fn new(key: Key, op: usize) -> Self {
        let mut h = mix(key.seed ^ 0x5354_4e41_5547_4d31); // "STNAUGM1"
        h = mix(h ^ key.epoch.wrapping_mul(GOLDEN));
        h = mix(h ^ key.index.wrapping_add(GOLDEN));
        h = mix(h ^ (op as u64).wrapping_mul(0xd1b5_4a32_d192_ed03));
        Stream { state: h }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi] (exactly `lo` when the range is a single value).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        let u = self.uniform();
        if lo == hi {
            lo
        } else {
            lo + (hi - lo) * u
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_every_part_of_the_key_and_repeat_exactly() {
        let k = Key::new(7, 2, 11);
        let draw = |k: Key, op| {
            let mut s = Stream::new(k, op);
            (0..4).map(|_| s.uniform()).collect::<Vec<_>>()
        };
        assert_eq!(draw(k, 0), draw(k, 0));
        for other in [Key::new(8, 2, 11), Key::new(7, 3, 11), Key::new(7, 2, 12)] {
            assert_ne!(draw(k, 0), draw(other, 0));
        }
        assert_ne!(draw(k, 0), draw(k, 1));
        let mut s = Stream::new(k, 0);
        let mean: f64 = (0..10_000).map(|_| s.uniform()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
