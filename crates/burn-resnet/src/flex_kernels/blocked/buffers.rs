//! Activation buffers kept for reuse: a conv's output takes the buffer of an activation nobody
//! reads any more (of this forward pass or an earlier one) instead of new memory, whose pages the
//! kernel would fault in and zero again — at batch 8 that cost a memory-bound 1x1 conv a quarter
//! of its time, and the stem's first output twice its compute. ONNX Runtime keeps its arena the
//! same way. At most [`CAPACITY_FLOATS`] are kept; `clear_packed_weights` frees them.

use std::cell::Cell;
use std::sync::{Mutex, PoisonError};

/// The most values kept (256 MiB of `f32`: ResNet-50's activations at batch 8, 224², take
/// about 100 MiB at a time).
const CAPACITY_FLOATS: usize = 64 << 20;

#[derive(Default)]
struct Pool {
    buffers: Vec<Vec<f32>>,
    floats: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    buffers: Vec::new(),
    floats: 0,
});

/// The smallest kept buffer with room for `len` values, `len` long (its values are stale).
/// Buffers are matched by capacity: one that served a shorter activation before is still
/// whole.
pub(super) fn take(len: usize) -> Option<Vec<f32>> {
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    let best = (0..pool.buffers.len())
        .filter(|&i| pool.buffers[i].capacity() >= len)
        .min_by_key(|&i| pool.buffers[i].capacity())?;
    let mut buffer = pool.buffers.swap_remove(best);
    pool.floats -= buffer.capacity();
    drop(pool);
    if buffer.len() < len {
        // Within the capacity: no reallocation, only the tail written.
        buffer.resize(len, 0.0);
    }
    buffer.truncate(len);
    Some(buffer)
}

thread_local! {
    /// Cleared by [`without_keeping`] on its thread.
    static KEEPING: Cell<bool> = const { Cell::new(true) };
}

/// `f` with the activations it drops on this thread freed, not kept: for the blocked kernels
/// run inside a training step (its frozen stages, its Winograd convs), whose memory the
/// allocator hands to the step's other tensors in turn; kept buffers would add to the step's
/// peak. Kept buffers are still taken.
pub(crate) fn without_keeping<R>(f: impl FnOnce() -> R) -> R {
    crate::flex_kernels::with_thread_value(&KEEPING, false, f)
}

/// Keep `values` for a later activation, unless that would pass the capacity or
/// [`without_keeping`] runs.
pub(super) fn give(values: Vec<f32>) {
    if values.is_empty() || !KEEPING.get() {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if pool.floats + values.capacity() <= CAPACITY_FLOATS {
        pool.floats += values.capacity();
        pool.buffers.push(values);
    }
}

/// Free every kept buffer.
pub(crate) fn clear() {
    *POOL.lock().unwrap_or_else(PoisonError::into_inner) = Pool::default();
}
