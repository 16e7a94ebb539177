//! Group commit of routing keys: the keys bound for one ConfigMap that arrive while a write to
//! it is in flight wait for that write, then go out together as the next one.
//!
//! There is no timer: a key for a ConfigMap with nothing in flight goes out at once (no added
//! latency when the controller is idle); under load the keys that queued behind a write form
//! the next batch, so one ConfigMap write (which rewrites the whole object, up to 100 documents,
//! and wakes every proxy watching it) carries many rollouts' keys.
//!
//! This is the bookkeeping alone, without I/O or a clock, so it is tested without a cluster.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// The keys one write sets: key → document, or `None` to remove the key.
pub type Changes = BTreeMap<String, Option<String>>;

/// The changes one write carries, and who waits for its result.
#[derive(Debug, PartialEq)]
pub struct Batch<W> {
    /// What the write sets and removes.
    pub changes: Changes,
    /// Everyone whose key is in `changes`, told the write's result.
    pub waiters: Vec<W>,
}

/// What a caller of [`Queue::join`] must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Joined {
    /// No writer runs for this ConfigMap: start one (it takes the batch with [`Queue::next`]).
    StartWriter,
    /// A writer runs: the key goes out with its next write.
    Queued,
}

/// The pending batch of each ConfigMap (`T` names it) that has a writer running.
#[derive(Debug)]
pub struct Queue<T, W> {
    pending: HashMap<T, Batch<W>>,
}

impl<T, W> Default for Queue<T, W> {
    fn default() -> Self {
        Queue { pending: HashMap::new() }
    }
}

impl<T: Eq + Hash + Clone, W> Queue<T, W> {
    /// Adds `key` (set to `value`, or removed if `None`) to the next write into `target`.
    /// A key already pending takes the later value, as two writes in a row would leave it.
    pub fn join(&mut self, target: &T, key: String, value: Option<String>, waiter: W) -> Joined {
        let joined =
            if self.pending.contains_key(target) { Joined::Queued } else { Joined::StartWriter };
        let batch = self
            .pending
            .entry(target.clone())
            .or_insert_with(|| Batch { changes: Changes::new(), waiters: Vec::new() });
        batch.changes.insert(key, value);
        batch.waiters.push(waiter);
        joined
    }

    /// The writer of `target` takes what queued since its last write; `None` when nothing did,
    /// and the writer then stops (the next [`Queue::join`] starts a new one).
    pub fn next(&mut self, target: &T) -> Option<Batch<W>> {
        let batch = self.pending.get_mut(target)?;
        if batch.waiters.is_empty() {
            self.pending.remove(target);
            return None;
        }
        // The entry stays, empty: it marks the write in flight, so newcomers queue behind it.
        Some(std::mem::replace(batch, Batch { changes: Changes::new(), waiters: Vec::new() }))
    }

    /// Forgets `target`'s pending batch (its waiters are dropped) after its writer stopped
    /// early, so the next [`Queue::join`] starts a new writer.
    pub fn abandon(&mut self, target: &T) {
        self.pending.remove(target);
    }

    /// True while a writer runs for `target`.
    pub fn writing(&self, target: &T) -> bool {
        self.pending.contains_key(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step of a test: a caller joins, or the writer asks for its next batch.
    enum Step {
        Join(&'static str, &'static str, Option<&'static str>, u32),
        Next(&'static str),
    }

    /// What a step returns.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Joined(Joined),
        Batch(Option<Batch<u32>>),
    }

    fn batch(changes: &[(&str, Option<&str>)], waiters: &[u32]) -> Seen {
        let changes =
            changes.iter().map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned))).collect();
        Seen::Batch(Some(Batch { changes, waiters: waiters.to_vec() }))
    }

    fn run(steps: Vec<Step>) -> Vec<Seen> {
        let mut queue: Queue<&str, u32> = Queue::default();
        steps
            .into_iter()
            .map(|step| match step {
                Step::Join(target, key, value, waiter) => Seen::Joined(queue.join(
                    &target,
                    key.to_owned(),
                    value.map(str::to_owned),
                    waiter,
                )),
                Step::Next(target) => Seen::Batch(queue.next(&target)),
            })
            .collect()
    }

    #[test]
    fn batching() {
        use Step::{Join, Next};
        let start = || Seen::Joined(Joined::StartWriter);
        let queued = || Seen::Joined(Joined::Queued);
        let done = || Seen::Batch(None);
        let cases: Vec<(&str, Vec<Step>, Vec<Seen>)> = vec![
            (
                // An idle ConfigMap: the key goes out at once, alone, and the writer then stops.
                "idle",
                vec![Join("cm", "a", Some("1"), 1), Next("cm"), Next("cm")],
                vec![start(), batch(&[("a", Some("1"))], &[1]), done()],
            ),
            (
                // Keys arriving during a write go out together in the next one.
                "queued behind a write",
                vec![
                    Join("cm", "a", Some("1"), 1),
                    Next("cm"),
                    Join("cm", "b", Some("2"), 2),
                    Join("cm", "c", None, 3),
                    Next("cm"),
                    Next("cm"),
                ],
                vec![
                    start(),
                    batch(&[("a", Some("1"))], &[1]),
                    queued(),
                    queued(),
                    batch(&[("b", Some("2")), ("c", None)], &[2, 3]),
                    done(),
                ],
            ),
            (
                // Keys that join before the writer takes its first batch go out with it.
                "joined before the first take",
                vec![Join("cm", "a", Some("1"), 1), Join("cm", "b", Some("2"), 2), Next("cm")],
                vec![start(), queued(), batch(&[("a", Some("1")), ("b", Some("2"))], &[1, 2])],
            ),
            (
                // Two ConfigMaps never share a write nor wait for each other.
                "two ConfigMaps",
                vec![
                    Join("x", "a", Some("1"), 1),
                    Join("y", "a", Some("2"), 2),
                    Next("x"),
                    Next("y"),
                ],
                vec![
                    start(),
                    start(),
                    batch(&[("a", Some("1"))], &[1]),
                    batch(&[("a", Some("2"))], &[2]),
                ],
            ),
            (
                // A key pending twice keeps the later value (a removal then a new document),
                // as two writes in a row would; both callers are told the result.
                "same key twice",
                vec![
                    Join("cm", "a", Some("1"), 1),
                    Next("cm"),
                    Join("cm", "b", None, 2),
                    Join("cm", "b", Some("3"), 3),
                    Next("cm"),
                ],
                vec![
                    start(),
                    batch(&[("a", Some("1"))], &[1]),
                    queued(),
                    queued(),
                    batch(&[("b", Some("3"))], &[2, 3]),
                ],
            ),
            (
                // After the writer stopped, the next key starts a new one.
                "writer restarts",
                vec![
                    Join("cm", "a", Some("1"), 1),
                    Next("cm"),
                    Next("cm"),
                    Join("cm", "b", Some("2"), 2),
                    Next("cm"),
                ],
                vec![
                    start(),
                    batch(&[("a", Some("1"))], &[1]),
                    done(),
                    start(),
                    batch(&[("b", Some("2"))], &[2]),
                ],
            ),
            (
                // A writer for a ConfigMap nobody joined has nothing to do.
                "nothing pending",
                vec![Next("cm")],
                vec![done()],
            ),
        ];
        for (name, steps, expected) in cases {
            assert_eq!(run(steps), expected, "{name}");
        }
    }

    /// `writing` is true from the first join until the writer finds nothing left.
    #[test]
    fn writing_until_the_writer_stops() {
        let mut queue: Queue<&str, u32> = Queue::default();
        assert!(!queue.writing(&"cm"));
        queue.join(&"cm", "a".into(), Some("1".into()), 1);
        assert!(queue.writing(&"cm"));
        assert!(queue.next(&"cm").is_some());
        assert!(queue.writing(&"cm"));
        assert!(queue.next(&"cm").is_none());
        assert!(!queue.writing(&"cm"));
    }

    /// After a writer is abandoned, the next caller starts a new one and the old waiters are gone.
    #[test]
    fn abandoned_writer_is_replaced() {
        let mut queue: Queue<&str, u32> = Queue::default();
        queue.join(&"cm", "a".into(), Some("1".into()), 1);
        assert!(queue.next(&"cm").is_some());
        queue.join(&"cm", "b".into(), Some("2".into()), 2);
        queue.abandon(&"cm");
        assert_eq!(queue.join(&"cm", "c".into(), Some("3".into()), 3), Joined::StartWriter);
        let batch = queue.next(&"cm").map(|b| b.waiters);
        assert_eq!(batch, Some(vec![3]));
    }
}
