//! How outbound delivery attempts ended, counted per recipient for the server's metrics page
//! (`[metrics]`): delivered, deferred for a later attempt, or failed (refused for good or
//! expired). Process-wide atomics, as the runner knows nothing of the server around it.

use std::sync::atomic::{AtomicU64, Ordering};

/// What became of one recipient at one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    Delivered,
    Deferred,
    Failed,
}

impl AttemptResult {
    pub const ALL: [AttemptResult; 3] = [
        AttemptResult::Delivered,
        AttemptResult::Deferred,
        AttemptResult::Failed,
    ];

    /// The metrics page's `result` label.
    pub fn label(self) -> &'static str {
        match self {
            AttemptResult::Delivered => "delivered",
            AttemptResult::Deferred => "deferred",
            AttemptResult::Failed => "failed",
        }
    }
}

static COUNTS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

/// Counts one recipient's attempt.
pub fn attempted(result: AttemptResult) {
    if let Some(count) = COUNTS.get(result as usize) {
        count.fetch_add(1, Ordering::Relaxed);
    }
}

/// The attempts so far by result, in [`AttemptResult::ALL`]'s order.
pub fn attempts() -> [(AttemptResult, u64); 3] {
    AttemptResult::ALL.map(|r| {
        let count = COUNTS
            .get(r as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed));
        (r, count)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_result_has_its_own_count() {
        let before = attempts();
        attempted(AttemptResult::Deferred);
        attempted(AttemptResult::Deferred);
        attempted(AttemptResult::Failed);
        let after = attempts();
        let grew: Vec<u64> = after
            .iter()
            .zip(&before)
            .map(|((_, a), (_, b))| a - b)
            .collect();
        // Other tests of this crate may deliver meanwhile; none defers or fails twice here.
        assert!(grew[1] >= 2 && grew[2] >= 1, "{grew:?}");
        assert_eq!(after[0].0.label(), "delivered");
    }
}
