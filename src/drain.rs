//! Graceful drain: a signal every connection watches, and a way to wait
//! until all of them have finished.

use tokio::sync::{mpsc, watch};

pub struct Drain {
    signal: watch::Sender<bool>,
    done_tx: mpsc::Sender<()>,
    done_rx: mpsc::Receiver<()>,
}

/// Held by every connection (and accept loop) for as long as it runs.
#[derive(Clone)]
pub struct Watch {
    signal: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
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
            signal: watch::Sender::new(false),
            done_tx,
            done_rx,
        }
    }

    pub fn watch(&self) -> Watch {
        Watch {
            signal: self.signal.subscribe(),
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
            signal,
            done_tx,
            mut done_rx,
        } = self;
        signal.send_replace(true);
        drop(done_tx);
        // recv() returns None once every Watch (and its sender) is dropped.
        while done_rx.recv().await.is_some() {}
    }
}

impl Watch {
    /// Resolves when draining starts.
    pub async fn signaled(&mut self) {
        let _ = self.signal.wait_for(|s| *s).await;
    }
}
