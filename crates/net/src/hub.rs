//! News between the IMAP sessions of one server: when a session changes a folder (flags,
//! expunges, copies, appends) it tells the others with the same mailbox open through a
//! broadcast channel per mailbox; they re-scan at the next command that may report it, at
//! once while in IDLE.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

/// A number no other session of this process has, to tell one's own changes from others'.
pub fn session_id() -> u64 {
    SESSION_IDS.fetch_add(1, Ordering::Relaxed)
}

/// One change: which session made it, in which folder.
pub type Change = (u64, Arc<Path>);

/// Per-mailbox news for the IMAP sessions of this server.
#[derive(Debug, Default)]
pub struct Hub {
    channels: Mutex<HashMap<PathBuf, broadcast::Sender<Change>>>,
}

impl Hub {
    pub fn subscribe(&self, mailbox: &Path) -> Option<broadcast::Receiver<Change>> {
        let mut channels = self.channels.lock().ok()?;
        // Forget mailboxes nobody listens to any more, so the table stays small.
        channels.retain(|_, sender| sender.receiver_count() > 0);
        let sender = channels
            .entry(mailbox.to_owned())
            .or_insert_with(|| broadcast::channel(64).0);
        Some(sender.subscribe())
    }

    pub fn notify(&self, mailbox: &Path, session: u64, folder: &Path) {
        if let Ok(channels) = self.channels.lock()
            && let Some(sender) = channels.get(mailbox)
        {
            let _ = sender.send((session, Arc::from(folder)));
        }
    }
}

/// The next change in the hub; `None` when some were missed. Never completes without a hub.
pub async fn next_change(changes: &mut Option<broadcast::Receiver<Change>>) -> Option<Change> {
    let Some(receiver) = changes else {
        return std::future::pending().await;
    };
    match receiver.recv().await {
        Ok(change) => Some(change),
        Err(broadcast::error::RecvError::Lagged(_)) => None,
        Err(broadcast::error::RecvError::Closed) => {
            *changes = None;
            std::future::pending().await
        }
    }
}
