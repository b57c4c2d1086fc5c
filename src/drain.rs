//! Graceful drain: a signal every connection watches, and a way to wait
//! until all of them have finished.
//!
//! Every idle connection holds a [`Watch`] for as long as it lives, so the
//! wait is a flag and a registered waker (about 50 bytes per connection)
//! rather than a channel receiver's pending future (160 bytes inside every
//! connection's task).

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use slab::Slab;
use tokio::sync::mpsc;

pub struct Drain {
    shared: Arc<Shared>,
    done_tx: mpsc::Sender<()>,
    done_rx: mpsc::Receiver<()>,
}

struct Shared {
    signaled: AtomicBool,
    /// The tasks waiting for the signal, one entry per waiting [`Watch`].
    waiting: Mutex<Slab<Waker>>,
}

impl Shared {
    fn waiting(&self) -> MutexGuard<'_, Slab<Waker>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Held by every connection (and accept loop) for as long as it runs.
pub struct Watch {
    shared: Arc<Shared>,
    /// This watch's entry in `waiting`, once it has waited.
    key: Option<usize>,
    _alive: mpsc::Sender<()>,
}

impl Clone for Watch {
    fn clone(&self) -> Self {
        Watch {
            shared: self.shared.clone(),
            key: None,
            _alive: self._alive.clone(),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.shared.waiting().try_remove(key);
        }
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    pub fn new() -> Self {
        let (done_tx, done_rx) = mpsc::channel(1);
        Drain {
            shared: Arc::new(Shared {
                signaled: AtomicBool::new(false),
                waiting: Mutex::new(Slab::new()),
            }),
            done_tx,
            done_rx,
        }
    }

    pub fn watch(&self) -> Watch {
        Watch {
            shared: self.shared.clone(),
            key: None,
            _alive: self.done_tx.clone(),
        }
    }

    /// Watchers still running (connections and accept loops).
    pub fn count(&self) -> usize {
        self.done_tx.strong_count().saturating_sub(1)
    }

    /// Signals every watcher, then waits until all of them are gone.
    pub async fn drain(self) {
        let Drain {
            shared,
            done_tx,
            mut done_rx,
        } = self;
        shared.signaled.store(true, Ordering::SeqCst);
        // Entries stay until their Watch drops, so keys are never reused
        // while a Watch still holds one.
        for (_, waker) in shared.waiting().iter() {
            waker.wake_by_ref();
        }
        drop(done_tx);
        // recv() returns None once every Watch (and its sender) is dropped.
        while done_rx.recv().await.is_some() {}
    }
}

impl Watch {
    /// Ready once draining has started; until then the task is woken when
    /// it starts.
    pub fn poll_signaled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.signaled.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        {
            // An entry is removed only when its own Watch drops, so a key
            // this Watch holds always finds its entry.
            let mut waiting = self.shared.waiting();
            match self.key.and_then(|key| waiting.get_mut(key)) {
                Some(w) => {
                    if !w.will_wake(cx.waker()) {
                        w.clone_from(cx.waker());
                    }
                }
                None => self.key = Some(waiting.insert(cx.waker().clone())),
            }
        }
        // Checked again now that the waker is in place: a signal given
        // between the first check and the registration is not missed.
        if self.shared.signaled.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Resolves when draining starts.
    pub async fn signaled(&mut self) {
        poll_fn(|cx| self.poll_signaled(cx)).await
    }
}

/// Installs the SIGTERM and SIGINT (Ctrl-C) handlers now; the returned
/// future resolves when either arrives. Install before announcing readiness:
/// until then a signal would kill the process.
pub fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_watch_is_woken_and_drain_waits_for_all() {
        let drain = Drain::new();
        let mut waiting = Vec::new();
        for _ in 0..3 {
            let mut w = drain.watch();
            waiting.push(tokio::spawn(async move {
                w.signaled().await;
                // Held a little past the signal: drain() waits for it.
                tokio::task::yield_now().await;
            }));
        }
        // A clone that never waits, and one dropped before the signal.
        let idle = drain.watch().clone();
        let mut gone = drain.watch();
        std::future::poll_fn(|cx| {
            let _ = gone.poll_signaled(cx);
            Poll::Ready(())
        })
        .await;
        drop(gone);
        // Let the waiters register.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        assert_eq!(drain.count(), 4);
        let draining = tokio::spawn(drain.drain());
        for t in waiting {
            t.await.unwrap();
        }
        // `idle` still runs: the drain is not over.
        tokio::task::yield_now().await;
        assert!(!draining.is_finished());
        drop(idle);
        tokio::time::timeout(std::time::Duration::from_secs(5), draining)
            .await
            .expect("drain returns once every watch is gone")
            .unwrap();
    }

    #[tokio::test]
    async fn a_watch_made_after_the_signal_is_ready_at_once() {
        let drain = Drain::new();
        let w = drain.watch();
        let shared = w.shared.clone();
        let draining = tokio::spawn(drain.drain());
        while !shared.signaled.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        let mut late = w.clone();
        late.signaled().await;
        drop((w, late));
        draining.await.unwrap();
    }
}
