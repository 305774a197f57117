//! The open connections, at most [`MAX_CONNECTIONS`]. When all are taken, a
//! new one replaces the oldest that has not sent a request yet, so idle or
//! half-open clients cannot crowd out a probe; when every one is serving a
//! request, the new one is closed at once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::common::locks::lock;
use crate::events::{ConnectionDropped, DropReason, Event as _};

/// Connections open at once.
pub const MAX_CONNECTIONS: usize = 256;

#[derive(Default)]
pub struct Connections {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    open: usize,
    next_id: u64,
    /// Connections without a request yet, oldest first, with their closers.
    waiting: VecDeque<(u64, Arc<Notify>)>,
}

/// One admitted connection; dropping it frees its place.
pub struct Slot {
    id: u64,
    closer: Arc<Notify>,
    table: Arc<Connections>,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// A place for a new connection, evicting the oldest waiting one when
    /// full; `None` when every open connection is serving a request.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut inner = self.lock();
        if inner.open >= MAX_CONNECTIONS {
            let Some((_, oldest)) = inner.waiting.pop_front() else {
                ConnectionDropped { reason: DropReason::Refused }.emit();
                return None;
            };
            // It closes at its task's next wake-up, and only then frees its place:
            // until then one more than the limit is open.
            oldest.notify_one();
            ConnectionDropped { reason: DropReason::Evicted }.emit();
        }
        inner.open += 1;
        let id = inner.next_id;
        inner.next_id += 1;
        let closer = Arc::new(Notify::new());
        inner.waiting.push_back((id, closer.clone()));
        Some(Slot { id, closer, table: self.clone() })
    }
}

impl Slot {
    /// The connection sent a request: it is no longer evicted for a newcomer.
    pub fn serving(&self) {
        self.table.lock().waiting.retain(|(id, _)| *id != self.id);
    }

    /// Resolves when a newcomer took this connection's place.
    pub async fn evicted(&self) {
        self.closer.notified().await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.table.lock();
        inner.waiting.retain(|(id, _)| *id != self.id);
        inner.open -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_evicts_the_oldest_waiting_connection_then_refuses() {
        let table = Arc::new(Connections::default());
        let mut slots: Vec<Slot> = (0..MAX_CONNECTIONS).map(|_| table.admit().unwrap()).collect();
        // All but the first two are serving requests.
        for s in &slots[2..] {
            s.serving();
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let evicted = |s: &Slot| {
            rt.block_on(async { tokio::time::timeout(std::time::Duration::from_millis(50), s.evicted()).await }).is_ok()
        };
        let newcomer = table.admit().expect("the oldest waiting one makes room");
        assert!(evicted(&slots[0]) && !evicted(&slots[1]) && !evicted(&newcomer));
        assert_eq!(table.lock().open, MAX_CONNECTIONS + 1, "until the evicted one closes");
        drop(slots.remove(0));
        assert_eq!(table.lock().open, MAX_CONNECTIONS);
        let second = table.admit().expect("the next waiting one makes room");
        assert!(evicted(&slots[0]));
        drop(slots.remove(0));
        newcomer.serving();
        second.serving();
        assert!(table.admit().is_none(), "every connection serves a request: refused");
        drop(newcomer);
        assert!(table.admit().is_some(), "a freed place is taken");
    }
}
