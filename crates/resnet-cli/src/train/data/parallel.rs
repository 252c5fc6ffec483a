//! Decoding a batch's images on several threads, keeping the batch's order: burn's own
//! multi-worker loader hands batches over in whichever order its workers finish them, so two
//! runs of one config would train on different sequences; decoding inside each batch keeps a
//! run reproducible (and exactly resumable) and still uses every core while images load.

use burn::data::dataset::DatasetError;

/// `load` of every index, on up to `threads` threads, in the indexes' order.
pub fn load_in_order<I: Send>(
    indexes: &[usize],
    threads: usize,
    load: impl Fn(usize) -> Result<I, DatasetError> + Sync,
) -> Result<Vec<I>, DatasetError> {
    let threads = threads.clamp(1, indexes.len().max(1));
    if threads == 1 {
        return indexes.iter().map(|&i| load(i)).collect();
    }
    let chunk = indexes.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let load = &load;
        let parts: Vec<_> = indexes
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|&i| load(i)).collect::<Vec<_>>()))
            .collect();
        let mut items = Vec::with_capacity(indexes.len());
        for part in parts {
            let part = part.join().map_err(|_| {
                DatasetError::new(std::io::Error::other("an image loading thread panicked"))
            })?;
            for item in part {
                items.push(item?);
            }
        }
        Ok(items)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_keep_their_order_and_the_first_error_is_returned() {
        let indexes: Vec<usize> = (0..37).collect();
        for threads in [1, 2, 5, 64] {
            let items = load_in_order(&indexes, threads, |i| Ok(i * 10)).unwrap();
            assert_eq!(items, indexes.iter().map(|i| i * 10).collect::<Vec<_>>());
        }
        let failing = load_in_order(&indexes, 3, |i| match i {
            20 | 30 => Err(DatasetError::new(std::io::Error::other(format!(
                "image {i}"
            )))),
            _ => Ok(i),
        });
        assert!(failing.unwrap_err().to_string().contains("image 20"));
    }
}
