//! Group commit: concurrent writers share flushes. A writer waits for one flush that
//! started after its write; while a flush runs, every writer that arrives waits for the
//! next one, which one of them starts for all.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::watch;

/// Coalesces concurrent flushes (see the module docs).
///
/// Waiters are woken together when a flush ends (a `watch` channel), not one after the
/// other through a lock: with 64 writers in flight that chain of wake-ups cost more than
/// the flush.
pub(crate) struct GroupCommit {
    /// Tickets handed out: one per write that asked to be flushed.
    requested: AtomicU64,
    /// The highest ticket a finished flush covers; every change wakes the waiters.
    flushed: watch::Sender<u64>,
    /// True while one writer runs a flush for everyone.
    flushing: AtomicBool,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self {
            requested: AtomicU64::new(0),
            flushed: watch::Sender::new(0),
            flushing: AtomicBool::new(false),
        }
    }
}

impl GroupCommit {
    /// Returns once a flush that started after this call has succeeded. `flush` is run by
    /// at most one caller at a time; a failed flush fails its caller, and the others try
    /// again with a flush of their own.
    pub(crate) async fn flush<E, Fut>(&self, flush: impl Fn() -> Fut) -> Result<(), E>
    where
        Fut: Future<Output = Result<(), E>>,
    {
        let ticket = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let mut flushed = self.flushed.subscribe();
        loop {
            if *flushed.borrow_and_update() >= ticket {
                return Ok(());
            }
            if self.flushing.swap(true, Ordering::AcqRel) {
                // Someone else's flush is running: it may have started before our write,
                // so wait for it to end and look again. The sender lives in `self`.
                let _ = flushed.changed().await;
                continue;
            }
            // Our turn. The guard ends the turn and wakes the waiters even if this future
            // is dropped mid-flush (a client that hung up).
            let turn = Turn(self);
            let covered = self.requested.load(Ordering::Acquire);
            let result = flush().await;
            if result.is_ok() {
                self.flushed
                    .send_modify(|flushed| *flushed = (*flushed).max(covered));
            }
            drop(turn);
            result?;
        }
    }
}

/// One writer's turn to flush; ends it on drop.
struct Turn<'a>(&'a GroupCommit);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.flushing.store(false, Ordering::Release);
        // Wake the waiters: after a failed or abandoned flush, one of them flushes next.
        self.0.flushed.send_modify(|_| {});
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_flushes_and_all_return() {
        let group = Arc::new(GroupCommit::default());
        let flushes = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..64)
            .map(|_| {
                let (group, flushes) = (Arc::clone(&group), Arc::clone(&flushes));
                tokio::spawn(async move {
                    group
                        .flush(|| async {
                            flushes.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            Ok::<(), ()>(())
                        })
                        .await
                })
            })
            .collect();
        for writer in writers {
            assert_eq!(writer.await.ok(), Some(Ok(())));
        }
        let flushes = flushes.load(Ordering::SeqCst);
        assert!(
            (1..64).contains(&flushes),
            "{flushes} flushes for 64 writers"
        );
    }

    #[tokio::test]
    async fn a_writer_waits_for_a_flush_that_started_after_its_write() {
        let group = GroupCommit::default();
        let flushes = AtomicUsize::new(0);
        let flush = || async {
            flushes.fetch_add(1, Ordering::SeqCst);
            Ok::<(), ()>(())
        };
        group.flush(flush).await.ok();
        group.flush(flush).await.ok();
        // Nothing ran concurrently: each write needed a flush of its own.
        assert_eq!(flushes.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_or_abandoned_flush_does_not_strand_the_others() {
        let group = Arc::new(GroupCommit::default());
        // A flusher that fails.
        let failed = group.flush(|| async { Err::<(), &str>("disk full") }).await;
        assert_eq!(failed, Err("disk full"));
        // A flusher whose future is dropped mid-flush, with a writer waiting behind it.
        let stuck = {
            let group = Arc::clone(&group);
            tokio::spawn(async move { group.flush(std::future::pending::<Result<(), ()>>).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let waiter = {
            let group = Arc::clone(&group);
            tokio::spawn(async move { group.flush(|| async { Ok::<(), ()>(()) }).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        stuck.abort();
        let result = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "the waiter did not get its flush: {result:?}"
        );
    }
}
