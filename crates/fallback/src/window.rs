//! A sliding time window of two counters, kept in ten slots: the arithmetic
//! shared by the retry budget (requests, retries) and the breakers
//! (successes, failures). Time comes in as a `Duration` since an epoch, so
//! tests drive it without a clock.

use std::time::Duration;

const SLOTS: usize = 10;

/// The smallest window: one nanosecond per slot would be meaningless.
pub(crate) const MIN_WINDOW: Duration = Duration::from_millis(SLOTS as u64);

#[derive(Debug, Clone)]
pub(crate) struct Window {
    slot_nanos: u64,
    slot: u64,
    a: [u64; SLOTS],
    b: [u64; SLOTS],
}

impl Window {
    pub(crate) fn new(window: Duration) -> Window {
        let per_slot = window.as_nanos() / SLOTS as u128;
        Window {
            slot_nanos: (per_slot.min(u64::MAX as u128) as u64).max(1),
            slot: 0,
            a: [0; SLOTS],
            b: [0; SLOTS],
        }
    }

    /// Moves to `since_epoch`, clearing the slots that left the window.
    fn advance(&mut self, since_epoch: Duration) -> usize {
        let nanos = since_epoch
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(since_epoch.subsec_nanos()));
        let slot = nanos / self.slot_nanos;
        if slot > self.slot {
            let gone = (slot - self.slot).min(SLOTS as u64);
            for k in 1..=gone {
                let idx = ((self.slot + k) % SLOTS as u64) as usize;
                self.a[idx] = 0;
                self.b[idx] = 0;
            }
            self.slot = slot;
        }
        (self.slot % SLOTS as u64) as usize
    }

    pub(crate) fn add_a(&mut self, since_epoch: Duration) {
        let i = self.advance(since_epoch);
        self.a[i] = self.a[i].saturating_add(1);
    }

    pub(crate) fn add_b(&mut self, since_epoch: Duration) {
        let i = self.advance(since_epoch);
        self.b[i] = self.b[i].saturating_add(1);
    }

    /// The two totals over the window, as of `since_epoch`.
    pub(crate) fn totals(&mut self, since_epoch: Duration) -> (u64, u64) {
        self.advance(since_epoch);
        (self.a.iter().sum(), self.b.iter().sum())
    }

    pub(crate) fn clear(&mut self) {
        self.a = [0; SLOTS];
        self.b = [0; SLOTS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_leave_after_the_window() {
        let s = Duration::from_secs;
        let mut w = Window::new(s(10));
        w.add_a(s(0));
        w.add_b(s(5));
        assert_eq!(w.totals(s(9)), (1, 1));
        assert_eq!(w.totals(s(11)), (0, 1));
        assert_eq!(w.totals(s(16)), (0, 0));
        // A jump far ahead clears everything once, without looping per slot.
        w.add_a(s(1_000_000));
        assert_eq!(w.totals(s(1_000_000)), (1, 0));
    }
}
