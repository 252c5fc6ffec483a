//! The training split as burn-train's multi-device strategy reads it, so that each step trains
//! on the same images as a one-device step with the whole batch.
//!
//! burn-train (0.22, `split_dataloader`) cuts the loader's items into one contiguous run per
//! device and steps them side by side: device `d`'s `k`-th batch is its run's `k`-th. Left at
//! that, step `k` would join images `k·b..` of the first half with images `N/2 + k·b..` of the
//! second, not the `k`-th batch of the epoch's order. [`DeviceShards`] re-lays the split out so
//! that the side-by-side batches of step `k` are, device after device, the global batch `k`
//! (images `k·B .. (k+1)·B` of the epoch's order, `B = devices · b`). A last global batch that
//! would not fill every device is left out each epoch (as PyTorch's `drop_last`; which images
//! that is changes with the epoch's order on data from disk), so that every device steps the
//! same number of times on batches of the same size.

use std::sync::Arc;

use burn::data::dataset::{Dataset, DatasetError};

/// `inner` re-laid out for `devices` devices taking `per_device` images each per step.
pub struct DeviceShards<I> {
    inner: Arc<dyn Dataset<I>>,
    devices: usize,
    per_device: usize,
    /// Whole global batches in `inner`.
    steps: usize,
}

impl<I> DeviceShards<I> {
    /// The view of `inner` for `devices` devices (at least one) of `per_device` images (at
    /// least one) each per step.
    pub fn new(inner: Arc<dyn Dataset<I>>, devices: usize, per_device: usize) -> Self {
        let (devices, per_device) = (devices.max(1), per_device.max(1));
        let steps = inner.len() / (devices * per_device);
        Self {
            inner,
            devices,
            per_device,
            steps,
        }
    }

    /// The images of `inner` a device-split run leaves out of each epoch.
    pub fn dropped(&self) -> usize {
        self.inner.len() - self.len_whole()
    }

    fn len_whole(&self) -> usize {
        self.steps * self.devices * self.per_device
    }

    /// The index in `inner` of this view's `index`: device `d`'s run is
    /// `[d·steps·b, (d+1)·steps·b)`, its `k`-th batch the `d`-th share of global batch `k`.
    fn inner_index(&self, index: usize) -> usize {
        let run = self.steps * self.per_device;
        let (device, position) = (index / run, index % run);
        let (step, offset) = (position / self.per_device, position % self.per_device);
        (step * self.devices + device) * self.per_device + offset
    }
}

impl<I: Send + Sync> Dataset<I> for DeviceShards<I> {
    fn get(&self, index: usize) -> Result<I, DatasetError> {
        if index >= self.len_whole() {
            return Err(DatasetError::new(std::io::Error::other(format!(
                "no image {index} in a split of {} images",
                self.len_whole()
            ))));
        }
        self.inner.get(self.inner_index(index))
    }

    fn len(&self) -> usize {
        self.len_whole()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::data::dataset::InMemDataset;

    #[test]
    fn each_step_joins_the_devices_shares_of_one_global_batch() {
        // 2 devices x 3 images: 14 images hold 2 global batches; 2 are left out.
        let inner: Arc<dyn Dataset<usize>> = Arc::new(InMemDataset::new((0..14).collect()));
        let shards = DeviceShards::new(inner, 2, 3);
        assert_eq!((shards.len(), shards.dropped()), (12, 2));
        let items: Vec<usize> = (0..12).map(|i| shards.get(i).unwrap()).collect();
        // Device 0's run, then device 1's: step 0 is [0,1,2] + [3,4,5], step 1 [6,7,8] + [9,10,11].
        assert_eq!(items, [0, 1, 2, 6, 7, 8, 3, 4, 5, 9, 10, 11]);
        assert!(shards.get(12).is_err());
    }

    #[test]
    fn one_device_is_the_split_itself() {
        let inner: Arc<dyn Dataset<usize>> = Arc::new(InMemDataset::new((0..10).collect()));
        let shards = DeviceShards::new(inner, 1, 4);
        let items: Vec<usize> = (0..shards.len()).map(|i| shards.get(i).unwrap()).collect();
        assert_eq!(items, (0..8).collect::<Vec<_>>());
    }
}
