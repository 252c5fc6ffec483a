//! The order and mirroring of training images read from disk, epoch by epoch: a permutation
//! drawn from the run's seed and the epoch, and half of the images mirrored, chosen the same
//! way. The epoch is counted from the images handed out (each epoch hands out every image
//! once), starting at the epoch a run starts from, so a resumed run sees exactly what an
//! uninterrupted one does. (Folders list images by class, so an unshuffled epoch would train
//! on one class after another; burn's loader shuffle restarts its generator on resume.)

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// SplitMix64's output function of `z`.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Each epoch's permutation and mirroring of a training split.
#[derive(Debug)]
pub struct EpochOrder {
    seed: u64,
    flip: bool,
    len: usize,
    served: AtomicU64,
    /// The current epoch and its permutation.
    order: Mutex<(u64, Vec<usize>)>,
}

impl EpochOrder {
    /// The order of a split of `len` images from `first_epoch` (0-based) on; `flip` mirrors
    /// half of them.
    pub fn new(seed: u64, flip: bool, len: usize, first_epoch: usize) -> Self {
        let epoch = first_epoch as u64;
        EpochOrder {
            seed,
            flip,
            len,
            served: AtomicU64::new(epoch * len as u64),
            order: Mutex::new((epoch, permutation(seed, epoch, len))),
        }
    }

    /// The image to hand out at position `index` of the epoch under way, and whether to
    /// mirror it.
    pub fn pick(&self, index: usize) -> (usize, bool) {
        let epoch = self.served.fetch_add(1, Ordering::Relaxed) / self.len.max(1) as u64;
        let mut order = self
            .order
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if order.0 != epoch {
            *order = (epoch, permutation(self.seed, epoch, self.len));
        }
        let image = order.1[index % self.len.max(1)];
        let flip = self.flip && mix(self.seed ^ mix(epoch) ^ mix(image as u64 ^ 0xF11F)) >> 63 == 1;
        (image, flip)
    }
}

/// Fisher-Yates from the seed and the epoch.
fn permutation(seed: u64, epoch: u64, len: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut state = seed ^ mix(epoch);
    for i in (1..len).rev() {
        state = mix(state);
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The images of `epochs` epochs, in order, with their mirroring.
    fn run(order: &EpochOrder, epochs: usize, len: usize) -> Vec<Vec<(usize, bool)>> {
        (0..epochs)
            .map(|_| (0..len).map(|i| order.pick(i)).collect())
            .collect()
    }

    #[test]
    fn epochs_are_permutations_that_change_and_resume_the_same() {
        let len = 50;
        let whole = run(&EpochOrder::new(7, true, len, 0), 3, len);
        for epoch in &whole {
            let mut images: Vec<usize> = epoch.iter().map(|p| p.0).collect();
            images.sort_unstable();
            assert_eq!(images, (0..len).collect::<Vec<_>>());
            let flipped = epoch.iter().filter(|p| p.1).count();
            assert!((10..=40).contains(&flipped), "{flipped} of {len} mirrored");
        }
        assert_ne!(whole[0], whole[1]);
        assert_ne!(
            whole[0].iter().map(|p| p.0).collect::<Vec<_>>(),
            (0..len).collect::<Vec<_>>()
        );
        // A run resumed at epoch 1 sees epochs 1 and 2 as the whole run did.
        assert_eq!(run(&EpochOrder::new(7, true, len, 1), 2, len), whole[1..]);
        // Without flipping, nothing is mirrored.
        assert!(
            run(&EpochOrder::new(7, false, len, 0), 1, len)[0]
                .iter()
                .all(|p| !p.1)
        );
    }
}
