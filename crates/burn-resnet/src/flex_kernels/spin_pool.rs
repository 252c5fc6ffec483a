//! Parallel loops for the blocked inference pass, on threads that spin between loops instead of
//! sleeping. A ResNet-50 pass at batch 1 is some sixty parallel loops of 0.1–0.7 ms each; through
//! rayon every one of them wakes a sleeping worker (and the calling thread sleeps until they
//! finish), which on this project's 2-vCPU machine cost 12–50 µs per loop. ONNX Runtime's pool
//! spins the same way (and OpenMP's, which PyTorch uses).
//!
//! The calling thread takes part; helper threads (rayon's thread count less one, read once)
//! pick up the same loop's tasks from one atomic counter. A helper spins for [`SPIN`] after
//! its last loop, then sleeps until the next one. One loop at a time: a second caller (another
//! thread, or a task starting a loop of its own) runs its loop on rayon instead.

use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use rayon::prelude::*;

/// How long a helper spins for the next loop before it sleeps.
const SPIN: Duration = Duration::from_millis(2);

/// A task of the current loop, its lifetime erased: called only for indices claimed below
/// `count`, all of which finish before [`for_each_task`] returns.
type Task = *const (dyn Fn(usize) + Sync);

/// One parallel loop.
struct Job {
    task: Task,
    count: usize,
    /// The next unclaimed index.
    next: AtomicUsize,
    /// Indices run to the end (or to a panic).
    finished: AtomicUsize,
    /// The first task's panic, raised in the caller at the end.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `task` points to a `Sync` closure, called only while `for_each_task` waits for it.
unsafe impl Send for Job {}
// SAFETY: as above; the other fields are atomics and a mutex.
unsafe impl Sync for Job {}

impl Job {
    /// Claim and run indices until none is left.
    fn work(&self) {
        loop {
            let index = self.next.fetch_add(1, Ordering::AcqRel);
            if index >= self.count {
                return;
            }
            // SAFETY: `index < count` was claimed, so the caller is still waiting for it and
            // the closure is alive.
            let task = unsafe { &*self.task };
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| task(index))) {
                locked(&self.panic).get_or_insert(payload);
            }
            self.finished.fetch_add(1, Ordering::AcqRel);
        }
    }
}

struct Pool {
    helpers: usize,
    /// Held by the loop running on the pool.
    busy: AtomicBool,
    /// Bumped for every new loop; helpers spin on it.
    epoch: AtomicU64,
    job: Mutex<Option<Arc<Job>>>,
    /// Helpers asleep, and where they sleep.
    sleeping: Mutex<usize>,
    wake: Condvar,
}

static POOL: OnceLock<Arc<Pool>> = OnceLock::new();

/// `mutex` locked, a poisoned one too (nothing here panics while holding one).
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The pool, its helpers started on first use.
fn pool() -> &'static Arc<Pool> {
    POOL.get_or_init(|| {
        let pool = Arc::new(Pool {
            helpers: rayon::current_num_threads().saturating_sub(1),
            busy: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            sleeping: Mutex::new(0),
            wake: Condvar::new(),
        });
        for index in 0..pool.helpers {
            let pool = Arc::clone(&pool);
            // A helper that cannot start leaves its share to the others and the caller.
            let _ = std::thread::Builder::new()
                .name(format!("burn-resnet-spin-{index}"))
                .spawn(move || helper(&pool));
        }
        pool
    })
}

fn helper(pool: &Pool) {
    let mut seen = 0;
    loop {
        let started = Instant::now();
        let mut spins = 0u32;
        loop {
            let epoch = pool.epoch.load(Ordering::Acquire);
            if epoch != seen {
                seen = epoch;
                break;
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && started.elapsed() > SPIN {
                let mut sleeping = locked(&pool.sleeping);
                *sleeping += 1;
                while pool.epoch.load(Ordering::Acquire) == seen {
                    sleeping = pool
                        .wake
                        .wait(sleeping)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                *sleeping -= 1;
            }
        }
        let job = locked(&pool.job).clone();
        if let Some(job) = job {
            job.work();
        }
    }
}

thread_local! {
    /// Set by [`on_rayon`] on its thread.
    static ON_RAYON: Cell<bool> = const { Cell::new(false) };
}

/// `f` with the loops it starts on this thread run on rayon, not the pool: for kernels that
/// run between rayon's own loops (the training graph's), where a helper spinning after the
/// last loop would take a core from the rayon workers that run the next op.
pub(crate) fn on_rayon<R>(f: impl FnOnce() -> R) -> R {
    super::with_thread_value(&ON_RAYON, true, f)
}

/// `task(i)` for every `i` in `0..count`, in any order, on the calling thread and the pool's
/// helpers (or on rayon while the pool runs another loop, or inside [`on_rayon`]). A panic in a
/// task is raised here once every other task has finished.
pub(crate) fn for_each_task(count: usize, task: &(dyn Fn(usize) + Sync)) {
    if count <= 1 {
        (0..count).for_each(task);
        return;
    }
    if ON_RAYON.get() {
        (0..count).into_par_iter().for_each(task);
        return;
    }
    let pool = pool();
    if pool.helpers == 0 {
        (0..count).for_each(task);
        return;
    }
    if pool
        .busy
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        (0..count).into_par_iter().for_each(task);
        return;
    }
    // SAFETY (lifetime erasure): the job's task is called only for claimed indices below
    // `count`, and this function waits for all of them to finish before it returns.
    let task: Task = unsafe {
        std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Task>(task as *const _)
    };
    let job = Arc::new(Job {
        task,
        count,
        next: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        panic: Mutex::new(None),
    });
    *locked(&pool.job) = Some(Arc::clone(&job));
    pool.epoch.fetch_add(1, Ordering::AcqRel);
    if *locked(&pool.sleeping) > 0 {
        pool.wake.notify_all();
    }
    job.work();
    while job.finished.load(Ordering::Acquire) < count {
        std::hint::spin_loop();
    }
    *locked(&pool.job) = None;
    pool.busy.store(false, Ordering::Release);
    let panic = locked(&job.panic).take();
    if let Some(payload) = panic {
        resume_unwind(payload);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::for_each_task;

    /// Long enough that a helper is still inside its last task when the caller runs out of
    /// indices.
    fn slow() {
        std::thread::sleep(std::time::Duration::from_micros(300));
    }

    #[test]
    fn every_index_runs_once_before_the_loop_returns_also_when_loops_nest() {
        let hits: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
        for round in 1..=20 {
            for_each_task(hits.len(), &|i| {
                slow();
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == round));
        }
        // A task's own loop runs on rayon (the pool is busy) and still covers every index.
        let inner = AtomicUsize::new(0);
        for_each_task(4, &|_| {
            for_each_task(8, &|_| {
                inner.fetch_add(1, Ordering::Relaxed);
            })
        });
        assert_eq!(inner.load(Ordering::Relaxed), 32);
    }

    #[test]
    fn a_panicking_task_panics_the_caller_after_the_others_finish() {
        let done = AtomicUsize::new(0);
        let result = std::panic::catch_unwind(|| {
            for_each_task(64, &|i| {
                if i == 7 {
                    panic!("task 7");
                }
                slow();
                done.fetch_add(1, Ordering::Relaxed);
            })
        });
        assert!(result.is_err());
        assert_eq!(done.load(Ordering::Relaxed), 63);
        // The pool is free again.
        let after = AtomicUsize::new(0);
        for_each_task(16, &|_| {
            after.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(after.load(Ordering::Relaxed), 16);
    }
}
