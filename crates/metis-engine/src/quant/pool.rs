//! A small persistent thread pool for the decode-sized products: one dispatch per product,
//! workers that spin briefly between products instead of going to sleep.
//!
//! A decode step of a 135M model runs about 120 products of 50–300 µs each, separated by a
//! few dozen µs of other work. rayon's workers fall asleep in those gaps, and waking them costs
//! a sizeable share of each product; llama.cpp avoids this with threads that poll between graph
//! nodes. Here the workers poll (yielding the core to any other runnable thread) for up to
//! [`SPIN`] after their last job, then sleep on a condition variable until the next one.
//!
//! The pool has `rayon::current_num_threads() − 1` workers; the calling thread takes part. A
//! call made while the pool is busy (another thread's product, or a product inside a task)
//! runs its tasks on the calling thread.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

/// How long an idle worker polls for the next job before sleeping.
const SPIN: Duration = Duration::from_micros(300);

/// The job of one generation: its tasks, as a lifetime-erased pointer (see `run`).
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    tasks: usize,
}

// SAFETY: the pointee is `Sync` and outlives every use (see `Pool::run`).
unsafe impl Send for Job {}

struct Shared {
    /// Bumped once per job; workers wait for it to change.
    generation: AtomicUsize,
    job: Mutex<Option<Job>>,
    /// Next task index to take.
    next: AtomicUsize,
    /// Workers that have not finished the current job.
    active: AtomicUsize,
    panicked: AtomicBool,
    sleep: Mutex<()>,
    wake: Condvar,
}

pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: usize,
    /// Held by the one caller using the workers.
    busy: Mutex<()>,
}

impl Pool {
    fn new(workers: usize) -> Pool {
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            job: Mutex::new(None),
            next: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut started = 0;
        for i in 0..workers {
            let s = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("metis-quant-{i}"))
                .spawn(move || worker(&s));
            if spawned.is_ok() {
                started += 1;
            }
        }
        Pool {
            shared,
            workers: started,
            busy: Mutex::new(()),
        }
    }

    /// Runs `f(0) … f(tasks − 1)`, each exactly once, over the workers and this thread.
    pub(crate) fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let guard = match self.busy.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                (0..tasks).for_each(f);
                return;
            }
        };
        if self.workers == 0 || tasks <= 1 {
            (0..tasks).for_each(f);
            return;
        }
        let s = &*self.shared;
        // SAFETY: erasing the lifetime of `f` is sound because this function does not return
        // (or unwind) before every worker has finished with this job: `active` counts the
        // workers, each decrements it after its last call of `f`, and we wait for zero below,
        // after catching a panic of our own share.
        let f_static: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        *lock(&s.job) = Some(Job { f: f_static, tasks });
        s.next.store(0, Ordering::Relaxed);
        s.active.store(self.workers, Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::Release);
        {
            let _g = lock(&s.sleep);
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| take_tasks(s, f, tasks)));
        while s.active.load(Ordering::Acquire) != 0 {
            std::thread::yield_now();
        }
        *lock(&s.job) = None;
        let worker_panicked = s.panicked.swap(false, Ordering::Relaxed);
        drop(guard);
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if worker_panicked {
            panic!("a product task panicked on a pool worker");
        }
    }
}

fn take_tasks(s: &Shared, f: &(dyn Fn(usize) + Sync), tasks: usize) {
    loop {
        let t = s.next.fetch_add(1, Ordering::Relaxed);
        if t >= tasks {
            return;
        }
        f(t);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn worker(s: &Shared) {
    let mut seen = 0usize;
    loop {
        seen = wait_for_job(s, seen);
        let job = *lock(&s.job);
        if let Some(job) = job {
            // SAFETY: `run` keeps the closure alive until `active` reaches zero, which cannot
            // happen before this worker's decrement below.
            let f = unsafe { &*job.f };
            if catch_unwind(AssertUnwindSafe(|| take_tasks(s, f, job.tasks))).is_err() {
                s.panicked.store(true, Ordering::Relaxed);
            }
        }
        s.active.fetch_sub(1, Ordering::Release);
    }
}

/// Polls for a generation after `seen` for up to [`SPIN`], then sleeps until one comes.
fn wait_for_job(s: &Shared, seen: usize) -> usize {
    let start = Instant::now();
    let mut polls = 0u32;
    loop {
        let g = s.generation.load(Ordering::Acquire);
        if g != seen {
            return g;
        }
        // Yield rather than burn the core: on a loaded machine (tests in parallel, a build)
        // another runnable thread gets it; on an idle one the yield returns at once.
        std::thread::yield_now();
        polls += 1;
        if polls.is_multiple_of(16) && start.elapsed() > SPIN {
            break;
        }
    }
    let mut guard = lock(&s.sleep);
    loop {
        let g = s.generation.load(Ordering::Acquire);
        if g != seen {
            return g;
        }
        guard = s.wake.wait(guard).unwrap_or_else(|p| p.into_inner());
    }
}

/// The process's pool, started on first use.
pub(crate) fn global() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool::new(rayon::current_num_threads().saturating_sub(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_including_nested_and_concurrent_calls() {
        let pool = Arc::new(Pool::new(3));
        for tasks in [0, 1, 2, 7, 1000] {
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            pool.run(tasks, &|t| {
                hits[t].fetch_add(1, Ordering::Relaxed);
                // A nested product runs inline on this thread.
                let inner = AtomicUsize::new(0);
                pool.run(3, &|_| {
                    inner.fetch_add(1, Ordering::Relaxed);
                });
                assert_eq!(inner.load(Ordering::Relaxed), 3);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "{tasks} tasks"
            );
        }
        // Callers on several threads at once: each gets all its tasks run exactly once.
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let sum = AtomicUsize::new(0);
                        pool.run(64, &|t| {
                            sum.fetch_add(t, Ordering::Relaxed);
                        });
                        assert_eq!(sum.load(Ordering::Relaxed), 64 * 63 / 2);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // Workers that fell asleep wake for the next job.
        std::thread::sleep(SPIN * 4);
        let n = AtomicUsize::new(0);
        pool.run(50, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 50);
    }

    #[test]
    fn a_panicking_task_panics_the_caller_and_the_pool_survives() {
        let pool = Pool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(16, &|t| assert!(t != 9, "task 9 fails"));
        }));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.run(16, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 16);
    }
}
