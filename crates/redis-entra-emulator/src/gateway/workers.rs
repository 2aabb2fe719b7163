//! The threads that run the gateway's sessions: one single-threaded runtime per core, each
//! with its own I/O driver, and each connection kept on one of them for its whole life (as
//! haproxy keeps a connection on one of its threads).
//!
//! On a work-stealing runtime a session's task moves between threads, and the thread that
//! polls for a socket's readiness is often not the one that runs the task, so a request and
//! its reply cost wakeups across threads. The gateway bench measured the difference at `-P 16`:
//! 0.88 of haproxy's rate on the application's two-thread runtime, 0.97 on one thread
//! (docs/PERFORMANCE.md). Sessions share nothing that is tied to a runtime (backend admin
//! connections are opened per use; the rest is channels, locks and atomics), so they may run
//! on runtimes of their own.

use std::future::Future;
use std::thread;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::Error;

/// The most session threads, whatever the number of cores.
const MAX_WORKERS: usize = 16;

/// The session threads. Dropping this stops them and waits for them: each drops its runtime,
/// and with it every session still there, before the drop returns. So nothing a session holds
/// (the backend above all, whose process goes when its last owner does) outlives the
/// gateway's listener, even when the process exits right after.
#[derive(Debug)]
pub(super) struct Workers {
    handles: Vec<Handle>,
    /// Dropped to stop the threads.
    stop: Vec<oneshot::Sender<()>>,
    threads: Vec<thread::JoinHandle<()>>,
    next: usize,
}

impl Workers {
    /// One thread per core (at most [`MAX_WORKERS`]).
    pub(super) fn start() -> Result<Self, Error> {
        let n = thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_WORKERS);
        let mut handles = Vec::with_capacity(n);
        let mut stop = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let runtime = Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("starting a gateway thread's runtime", e))?;
            handles.push(runtime.handle().clone());
            let (tx, rx) = oneshot::channel::<()>();
            let thread = thread::Builder::new()
                .name(format!("redis-entra-gateway-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = rx.await;
                    });
                })
                .map_err(|e| Error::io("starting a gateway thread", e))?;
            stop.push(tx);
            threads.push(thread);
        }
        Ok(Self {
            handles,
            stop,
            threads,
            next: 0,
        })
    }

    /// Spawns `task` into `set`, on the next thread in turn.
    pub(super) fn spawn<F>(&mut self, set: &mut JoinSet<()>, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next % self.handles.len().max(1);
        self.next = self.next.wrapping_add(1);
        match self.handles.get(i) {
            Some(handle) => set.spawn_on(task, handle),
            None => set.spawn(task),
        };
    }
}

impl Drop for Workers {
    /// Stops the threads and waits for them. The listener drops this when it ends, after its
    /// connections were drained or aborted, so the threads have little left to drop; it blocks
    /// the listener's thread for that long.
    fn drop(&mut self) {
        self.stop.clear();
        for thread in self.threads.drain(..) {
            if thread.thread().id() != thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}
