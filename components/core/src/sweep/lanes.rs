//! A tick's due hints in lanes, one per peer they call (a tenant's seller; buyer callbacks
//! share one), worked round-robin so that one slow peer cannot hold up the others: while
//! other lanes still have work, a lane gets at most its share of the tick's budget (the
//! budget over the number of lanes), and each of its calls must end within what is left of
//! that share. A lane past its share waits until no other lane has work, then may use what
//! is left of the budget. Hints not reached stay unread, for the next tick.

use crate::foundation::keys;
use crate::foundation::store::{Store, get_json};
use crate::model::operation::Operation;
use crate::schedule::due::Hint;
use std::collections::VecDeque;

/// A hint to work now, with the operation's snapshot as read for the split, and when its
/// calls must be over.
pub struct Turn {
    pub lane: usize,
    pub hint: Hint,
    pub snapshot: Option<Operation>,
    pub until_ms: u64,
}

/// The least time a turn gets for its calls. A call cut short after it reached its peer is
/// sent again (a buyer notification twice, a seller request resent under its key), so no
/// turn starts with less than this left of its lane's share or of the tick.
const MIN_TURN_MS: u64 = 2_000;

struct Lane {
    peer: String,
    hints: VecDeque<(Hint, Option<Operation>)>,
    used_ms: u64,
}

pub struct Lanes {
    lanes: Vec<Lane>,
    started_ms: u64,
    budget_ms: u64,
    next: usize,
}

/// Reads each operation's snapshot to find its seller. The work starts from the same
/// snapshot (one read per due operation, not two): it may be a few seconds old by then,
/// which every step allows for (a poll's answer is checked against the journal's head
/// before it is recorded, writes catch up with the journal, and a dispatch re-reads the
/// operation under its lease).
pub async fn split(store: &impl Store, hints: &[Hint], started_ms: u64, budget_ms: u64) -> Lanes {
    let mut work = Vec::with_capacity(hints.len());
    for hint in hints {
        let snapshot = if hint.op_id.starts_with("ntf_") {
            None
        } else {
            get_json::<Operation>(store, &keys::operation(&hint.op_id))
                .await
                .ok()
                .flatten()
        };
        work.push((hint.clone(), snapshot));
    }
    Lanes::new(work, started_ms, budget_ms)
}

/// The peer a hint's work calls.
fn peer(hint: &Hint, snapshot: Option<&Operation>) -> String {
    match snapshot {
        _ if hint.op_id.starts_with("ntf_") => "callbacks".into(),
        Some(op) => format!("{}:{}", op.tenant_id, op.seller_id),
        // Unread: its own lane, so a store hiccup does not join it to a busy seller's.
        None => format!("?{}", hint.op_id),
    }
}

impl Lanes {
    pub fn new(work: Vec<(Hint, Option<Operation>)>, started_ms: u64, budget_ms: u64) -> Lanes {
        let mut lanes: Vec<Lane> = Vec::new();
        for (hint, snapshot) in work {
            let p = peer(&hint, snapshot.as_ref());
            let lane = match lanes.iter().position(|l| l.peer == p) {
                Some(i) => i,
                None => {
                    lanes.push(Lane {
                        peer: p,
                        hints: VecDeque::new(),
                        used_ms: 0,
                    });
                    lanes.len() - 1
                }
            };
            lanes[lane].hints.push_back((hint, snapshot));
        }
        Lanes {
            lanes,
            started_ms,
            budget_ms,
            next: 0,
        }
    }

    fn share_ms(&self) -> u64 {
        (self.budget_ms / (self.lanes.len().max(1) as u64)).max(MIN_TURN_MS)
    }

    /// Whether the lane has a turn's worth left of its share.
    fn within_share(&self, i: usize) -> bool {
        self.lanes[i].used_ms + MIN_TURN_MS <= self.share_ms()
    }

    /// Whether a lane other than `i` has work and time left in its share.
    fn others_waiting(&self, i: usize) -> bool {
        (0..self.lanes.len())
            .any(|j| j != i && !self.lanes[j].hints.is_empty() && self.within_share(j))
    }

    /// The next hint to work at `now_ms`, round-robin; `None` when none is left or the
    /// budget is spent.
    pub fn next(&mut self, now_ms: u64) -> Option<Turn> {
        let end = self.started_ms.saturating_add(self.budget_ms);
        if now_ms.saturating_add(MIN_TURN_MS) > end {
            return None;
        }
        let n = self.lanes.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if self.lanes[i].hints.is_empty() {
                continue;
            }
            let waiting = self.others_waiting(i);
            if waiting && !self.within_share(i) {
                continue;
            }
            let until_ms = if waiting {
                end.min(now_ms + (self.share_ms() - self.lanes[i].used_ms))
            } else {
                end
            };
            let (hint, snapshot) = self.lanes[i].hints.pop_front()?;
            self.next = i + 1;
            return Some(Turn {
                lane: i,
                hint,
                snapshot,
                until_ms,
            });
        }
        None
    }

    /// The work of a turn of lane `lane` took `ms`.
    pub fn spent(&mut self, lane: usize, ms: u64) {
        if let Some(l) = self.lanes.get_mut(lane) {
            l.used_ms += ms;
        }
    }

    /// Hints not handed out.
    pub fn left(&self) -> usize {
        self.lanes.iter().map(|l| l.hints.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample;

    fn work(sellers: &[&str]) -> Vec<(Hint, Option<Operation>)> {
        sellers
            .iter()
            .enumerate()
            .map(|(n, s)| {
                let mut op = sample(&format!("op{n}"));
                op.seller_id = s.to_string();
                let hint = Hint {
                    bucket: 0,
                    n: n as u64,
                    op_id: op.operation_id.clone(),
                };
                (hint, Some(op))
            })
            .collect()
    }

    #[test]
    fn lanes_take_turns_and_a_slow_one_is_held_to_its_share_while_others_wait() {
        // Three of the slow seller's hints first, then two of a healthy one's.
        let mut lanes = Lanes::new(work(&["slow", "slow", "slow", "ok", "ok"]), 0, 20_000);
        let mut now = 0;
        let mut order = Vec::new();
        while let Some(turn) = lanes.next(now) {
            let slow = turn.hint.op_id != "op3" && turn.hint.op_id != "op4";
            if slow {
                // Its calls must end within its 10 s share.
                assert!(turn.until_ms <= now + 10_000, "{}", turn.until_ms);
            }
            order.push(turn.hint.op_id.clone());
            // The slow seller's call runs to its deadline; the healthy one answers in 100 ms.
            let took = if slow { turn.until_ms - now } else { 100 };
            now += took;
            lanes.spent(turn.lane, took);
        }
        assert_eq!(
            order[..3],
            ["op0", "op3", "op4"],
            "the healthy seller is not held up"
        );
        assert!(now <= 20_000, "the tick ends within its budget: {now}");
        // The rest of the budget went to the slow lane; its last hint waits for the next tick.
        assert_eq!(lanes.left(), 1);
    }

    #[test]
    fn no_turn_starts_with_too_little_time_for_its_calls() {
        // Many quick notifications share one lane: each turn still gets at least 2 s.
        let mut lanes = Lanes::new(work(&["a", "a", "a", "a", "b"]), 0, 6_000);
        let mut now = 0;
        while let Some(turn) = lanes.next(now) {
            assert!(
                turn.until_ms >= now + MIN_TURN_MS,
                "{} at {now}",
                turn.until_ms
            );
            now += 1_100;
            lanes.spent(turn.lane, 1_100);
        }
        assert!(
            now + MIN_TURN_MS > 6_000,
            "stopped with time for a turn: {now}"
        );
    }

    #[test]
    fn the_budget_ends_the_turns() {
        let mut lanes = Lanes::new(work(&["a", "b"]), 1_000, 5_000);
        assert!(lanes.next(1_000).is_some());
        assert!(lanes.next(6_000).is_none());
        assert_eq!(lanes.left(), 1);
    }
}
