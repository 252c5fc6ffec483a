//! Packed weights kept between calls: packing a deep conv's weights costs as much as the conv
//! itself at batch 1, and inference calls the same weights again and again.
//!
//! An entry is keyed by the address and length of the weight's values and holds a clone of the
//! weight's flex tensor. That clone is what makes the key safe: flex shares storage between
//! clones and copies it before any in-place write while it is shared (`Arc::make_mut`), so while
//! the entry lives, those bytes can neither change nor be freed and reused by another tensor.
//! An entry whose clone is the weight's last holder (the model was dropped, or its weights
//! replaced) is dropped at the next packing; the cache is also bounded ([`CAPACITY_FLOATS`],
//! least recently used entries go first), and [`clear_packed_weights`] empties it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use burn_flex::FlexTensor;

use super::pack::pack_weights;
use crate::flex_kernels::conv::ConvGeometry;
use crate::flex_kernels::float_slice;

/// The most packed values kept (256 MiB of `f32`: ResNet-101 takes 170 MiB).
const CAPACITY_FLOATS: usize = 64 << 20;

/// Which packing an entry holds: the micro-kernels' panels or the blocked conv's layout
/// (`crate::flex_kernels::blocked`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Packing {
    /// `[group][panel][depth][MR]`.
    Panels,
    /// `[out block][in block][kh][kw][16][16]`.
    Blocked,
    /// Winograd F(2x2, 3x3): `[point][out block][in block][16][16]`.
    Winograd,
}

/// What identifies a weight's packing: its values' address and length, and the layout it was
/// packed for.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    address: usize,
    len: usize,
    groups: usize,
    out_channels: usize,
    packing: Packing,
}

struct Entry {
    /// Keeps the weight's storage alive and unshared-for-writing while the entry lives.
    weight: FlexTensor,
    packed: Arc<Vec<f32>>,
    last_use: u64,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<Key, Entry>,
    floats: usize,
    clock: u64,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// The packed form of `weight` (a contiguous f32 flex tensor) for `geometry`, from the cache or
/// packed now and kept.
pub(crate) fn packed_weights(
    weight: &FlexTensor,
    geometry: &ConvGeometry,
) -> Option<Arc<Vec<f32>>> {
    let layout = (geometry.groups, geometry.out_channels, Packing::Panels);
    cached_packing(weight, layout, |values| pack_weights(values, geometry))
}

/// The packing `pack` makes of `weight` (a contiguous f32 flex tensor) for `(groups, output
/// channels, packing)`, from the cache or packed now and kept.
pub(crate) fn cached_packing(
    weight: &FlexTensor,
    (groups, out_channels, packing): (usize, usize, Packing),
    pack: impl FnOnce(&[f32]) -> Vec<f32>,
) -> Option<Arc<Vec<f32>>> {
    let values = float_slice(weight)?;
    let key = Key {
        address: values.as_ptr() as usize,
        len: values.len(),
        groups,
        out_channels,
        packing,
    };
    {
        let mut guard = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
        let cache = guard.get_or_insert_with(Cache::default);
        cache.clock += 1;
        let clock = cache.clock;
        if let Some(entry) = cache.entries.get_mut(&key) {
            entry.last_use = clock;
            return Some(entry.packed.clone());
        }
    }
    // Packed outside the lock; two threads packing the same weight both insert the same values.
    let packed = Arc::new(pack(values));
    if packed.len() > CAPACITY_FLOATS {
        return Some(packed);
    }
    let mut guard = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    let cache = guard.get_or_insert_with(Cache::default);
    // Weights nobody else holds any more.
    let mut freed = 0;
    cache.entries.retain(|_, entry| {
        let orphan = entry.weight.is_unique();
        if orphan {
            freed += entry.packed.len();
        }
        !orphan
    });
    cache.floats -= freed;
    while cache.floats + packed.len() > CAPACITY_FLOATS {
        let Some(oldest) = cache
            .entries
            .iter()
            .min_by_key(|(_, entry)| entry.last_use)
            .map(|(key, _)| *key)
        else {
            break;
        };
        if let Some(entry) = cache.entries.remove(&oldest) {
            cache.floats -= entry.packed.len();
        }
    }
    cache.clock += 1;
    let entry = Entry {
        weight: weight.clone(),
        packed: packed.clone(),
        last_use: cache.clock,
    };
    if let Some(previous) = cache.entries.insert(key, entry) {
        cache.floats -= previous.packed.len();
    }
    cache.floats += packed.len();
    Some(packed)
}

/// Drop every packed weight the flex inference convs keep (and the weights they hold on to),
/// and the activation buffers the blocked layout keeps for reuse.
pub fn clear_packed_weights() {
    let mut guard = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    *guard = None;
    crate::flex_kernels::blocked::clear_buffers();
}

/// Whether the weight whose values start at `address` (`len` of them) is cached.
#[cfg(test)]
pub(crate) fn is_cached(address: usize, len: usize) -> bool {
    is_cached_as(address, len, None)
}

/// [`is_cached`] in `packing` (any packing for `None`).
#[cfg(test)]
pub(crate) fn is_cached_as(address: usize, len: usize, packing: Option<Packing>) -> bool {
    CACHE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .is_some_and(|cache| {
            cache.entries.keys().any(|key| {
                key.address == address && key.len == len && packing.is_none_or(|p| key.packing == p)
            })
        })
}
