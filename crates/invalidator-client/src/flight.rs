//! Single flight per key: at most one load of a key runs at a time through
//! [`CacheClient::get_or_fill`](crate::CacheClient::get_or_fill); other callers wait for it
//! (a miss) or are served the stale value meanwhile (a soft-invalidated entry).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

#[derive(Default)]
pub(crate) struct Flights {
    state: Mutex<FlightState>,
}

#[derive(Default)]
struct FlightState {
    next: u64,
    running: HashMap<String, (u64, watch::Receiver<()>)>,
}

/// The caller's role for one key.
pub(crate) enum Join {
    /// Run the load; dropping the guard ends the flight (also when the load is cancelled).
    Leader(FlightGuard),
    /// A load is running: `changed()` returns when it ends.
    Follower(watch::Receiver<()>),
}

pub(crate) struct FlightGuard {
    flights: Arc<Flights>,
    key: String,
    id: u64,
    _done: watch::Sender<()>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut st = self.flights.state.lock();
        if st
            .running
            .get(&self.key)
            .is_some_and(|(id, _)| *id == self.id)
        {
            st.running.remove(&self.key);
        }
        // `_done` drops after this: followers wake and find the flight gone.
    }
}

impl Flights {
    pub fn join(self: &Arc<Self>, key: &str) -> Join {
        let mut st = self.state.lock();
        if let Some((_, rx)) = st.running.get(key) {
            return Join::Follower(rx.clone());
        }
        st.next += 1;
        let id = st.next;
        let (tx, rx) = watch::channel(());
        st.running.insert(key.to_string(), (id, rx));
        Join::Leader(FlightGuard {
            flights: self.clone(),
            key: key.to_string(),
            id,
            _done: tx,
        })
    }

    #[cfg(test)]
    pub fn is_running(&self, key: &str) -> bool {
        self.state.lock().running.contains_key(key)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.state.lock().running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_per_key_and_followers_wake_when_it_ends() {
        let f = Arc::new(Flights::default());
        let Join::Leader(g) = f.join("k") else {
            panic!("first caller leads")
        };
        let Join::Follower(mut rx) = f.join("k") else {
            panic!("second caller follows")
        };
        assert!(
            matches!(f.join("other"), Join::Leader(_)),
            "keys are independent"
        );
        assert!(f.is_running("k"));
        let waiter = tokio::spawn(async move { rx.changed().await.is_err() });
        tokio::task::yield_now().await;
        drop(g);
        assert!(waiter.await.unwrap(), "the follower woke: the flight ended");
        assert_eq!(f.len(), 0);
        assert!(
            matches!(f.join("k"), Join::Leader(_)),
            "a new flight can start"
        );
    }
}
