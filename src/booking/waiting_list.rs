//! The FIFO waiting list of one event.
//!
//! A waiting user's position is *derived*, never stored: every entry keeps the
//! sequence number it joined with, and its position is the number of entries
//! still waiting with a smaller number. Leaving from the middle only marks the
//! entry as gone in a Fenwick tree, so joining, leaving, promoting the head and
//! asking a position all cost O(log n), whether 10 or 1,000,000 users wait.

use std::collections::VecDeque;

use crate::ids::UserKey;

/// Once this many gone entries lie before the head, the Fenwick tree is rebuilt
/// from the live window so its size follows the queue, not its history.
const COMPACT_AFTER: u64 = 4096;

#[derive(Debug, Default)]
pub struct WaitingList {
    /// Slot `i` holds the user who joined with sequence number `head + i`, or
    /// `None` once that user left. The front slot is always occupied.
    slots: VecDeque<Option<UserKey>>,
    /// Sequence number of `slots[0]`: the head of the queue.
    head: u64,
    /// Marks the entries that left from the middle, counted by range.
    left: Fenwick,
    /// Sequence number of the first element of `left`.
    left_base: u64,
    /// Users still waiting (occupied slots).
    len: usize,
}

impl WaitingList {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A queue of `users`, in order, their sequence numbers 0, 1, 2...: built
    /// at once, without the Fenwick tree's O(log n) per push.
    pub fn from_users(users: impl IntoIterator<Item = UserKey>) -> Self {
        let slots: VecDeque<Option<UserKey>> = users.into_iter().map(Some).collect();
        WaitingList {
            left: slots.iter().map(|_| 0).collect(),
            len: slots.len(),
            slots,
            head: 0,
            left_base: 0,
        }
    }

    /// Appends `user` and returns the sequence number that identifies its entry.
    pub fn push(&mut self, user: UserKey) -> u64 {
        let seq = self.head + self.slots.len() as u64;
        self.slots.push_back(Some(user));
        self.left.push(0);
        self.len += 1;
        seq
    }

    /// 1-based place in the queue of the entry `seq`, which must still be waiting.
    pub fn position(&self, seq: u64) -> u64 {
        debug_assert!(seq >= self.head, "entry {seq} is no longer waiting");
        let gone_ahead =
            self.left.prefix(seq - self.left_base) - self.left.prefix(self.head - self.left_base);
        seq - self.head - u64::from(gone_ahead) + 1
    }

    /// Takes the user at the head of the queue.
    pub fn pop_front(&mut self) -> Option<UserKey> {
        let user = self
            .slots
            .pop_front()?
            .expect("the front slot is always occupied");
        self.head += 1;
        self.len -= 1;
        self.skip_gone();
        Some(user)
    }

    /// Removes the entry `seq` (a user leaving the queue); everyone behind moves up.
    pub fn remove(&mut self, seq: u64) {
        let slot = &mut self.slots[(seq - self.head) as usize];
        debug_assert!(slot.is_some(), "entry {seq} left twice");
        *slot = None;
        self.left.add(seq - self.left_base, 1);
        self.len -= 1;
        self.skip_gone();
    }

    /// The entries from `seq` on (from the head, if it is ahead of it), in
    /// queue order, with their sequence numbers.
    pub fn from_seq(&self, seq: u64) -> impl Iterator<Item = (u64, &UserKey)> {
        let skip = seq.saturating_sub(self.head) as usize;
        (self.head..)
            .zip(&self.slots)
            .skip(skip)
            .filter_map(|(seq, slot)| Some((seq, slot.as_ref()?)))
    }

    /// The sequence number of the entry at 1-based `position`, if the queue
    /// is that long. Walks the queue from its head: O(position).
    pub fn seq_at(&self, position: u64) -> Option<u64> {
        let index = usize::try_from(position.checked_sub(1)?).ok()?;
        self.from_seq(self.head).nth(index).map(|(seq, _)| seq)
    }

    /// Users in queue order, head first.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &UserKey> {
        self.slots.iter().flatten()
    }

    /// Restores the invariant that the front slot is occupied, and keeps the
    /// Fenwick tree no larger than about twice the live window.
    fn skip_gone(&mut self) {
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.head += 1;
        }
        let behind_head = self.head - self.left_base;
        if self.slots.is_empty()
            || (behind_head > COMPACT_AFTER && behind_head * 2 > self.left.len())
        {
            self.left = self
                .slots
                .iter()
                .map(|slot| u32::from(slot.is_none()))
                .collect();
            self.left_base = self.head;
        }
    }
}

/// A Fenwick (binary indexed) tree of counts: point updates and prefix sums in O(log n).
#[derive(Debug, Default)]
struct Fenwick {
    /// `tree[i - 1]` holds the sum of the elements in `(i - lowbit(i), i]` (1-based).
    tree: Vec<u32>,
}

impl Fenwick {
    fn len(&self) -> u64 {
        self.tree.len() as u64
    }

    /// Sum of the first `count` elements.
    fn prefix(&self, count: u64) -> u32 {
        let mut i = count as usize;
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i - 1];
            i &= i - 1;
        }
        sum
    }

    /// Adds `delta` to the element at 0-based `index`.
    fn add(&mut self, index: u64, delta: u32) {
        let mut i = index as usize + 1;
        while i <= self.tree.len() {
            self.tree[i - 1] += delta;
            i += i & i.wrapping_neg();
        }
    }

    /// Appends an element with value `value`.
    fn push(&mut self, value: u32) {
        let i = self.tree.len() + 1;
        let covered_from = (i - (i & i.wrapping_neg())) as u64;
        let node = value + self.prefix(i as u64 - 1) - self.prefix(covered_from);
        self.tree.push(node);
    }
}

impl FromIterator<u32> for Fenwick {
    /// Builds the tree in O(n).
    fn from_iter<I: IntoIterator<Item = u32>>(values: I) -> Self {
        let mut tree: Vec<u32> = values.into_iter().collect();
        for i in 1..=tree.len() {
            let parent = i + (i & i.wrapping_neg());
            if parent <= tree.len() {
                tree[parent - 1] += tree[i - 1];
            }
        }
        Fenwick { tree }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserKey {
        UserKey::from(name)
    }

    fn order(list: &WaitingList) -> Vec<String> {
        list.iter().map(|u| u.to_string()).collect()
    }

    #[test]
    fn positions_follow_join_order() {
        let mut list = WaitingList::default();
        let seqs: Vec<u64> = ["a", "b", "c"].map(|n| list.push(user(n))).to_vec();
        assert_eq!(
            seqs.iter().map(|&s| list.position(s)).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(list.len(), 3);
    }

    #[test]
    fn leaving_from_the_middle_moves_everyone_behind_up() {
        let mut list = WaitingList::default();
        let [a, b, c, d] = ["a", "b", "c", "d"].map(|n| list.push(user(n)));
        list.remove(b);
        assert_eq!([a, c, d].map(|s| list.position(s)), [1, 2, 3]);
        assert_eq!(order(&list), ["a", "c", "d"]);
        list.remove(a);
        assert_eq!([c, d].map(|s| list.position(s)), [1, 2]);
        assert_eq!(list.pop_front().as_deref(), Some("c"));
        assert_eq!(list.position(d), 1);
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn pop_front_skips_entries_that_left() {
        let mut list = WaitingList::default();
        let [_, b, c, _] = ["a", "b", "c", "d"].map(|n| list.push(user(n)));
        list.remove(b);
        list.remove(c);
        assert_eq!(list.pop_front().as_deref(), Some("a"));
        assert_eq!(list.pop_front().as_deref(), Some("d"));
        assert_eq!(list.pop_front(), None);
        assert!(list.is_empty());
    }

    #[test]
    fn matches_a_plain_vector_under_long_churn() {
        // A reference model: a Vec in queue order, positions by linear search.
        let mut list = WaitingList::default();
        let mut model: Vec<(u64, String)> = Vec::new();
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for step in 0..40_000u64 {
            match next() % 4 {
                0 | 1 => {
                    let name = format!("u{step}");
                    let seq = list.push(user(&name));
                    model.push((seq, name));
                }
                2 if !model.is_empty() => {
                    let (_, name) = model.remove(0);
                    assert_eq!(list.pop_front().as_deref(), Some(name.as_str()));
                }
                3 if !model.is_empty() => {
                    let (seq, _) = model.remove((next() % model.len() as u64) as usize);
                    list.remove(seq);
                }
                _ => {}
            }
            if step % 97 == 0 {
                for (index, (seq, _)) in model.iter().enumerate() {
                    assert_eq!(list.position(*seq), index as u64 + 1);
                }
            }
            assert_eq!(list.len(), model.len());
        }
        assert_eq!(
            order(&list),
            model.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn fenwick_push_agrees_with_bulk_build() {
        let values: Vec<u32> = (0..1000).map(|i| (i * 7 % 3) as u32).collect();
        let mut pushed = Fenwick::default();
        values.iter().for_each(|&v| pushed.push(v));
        let built: Fenwick = values.iter().copied().collect();
        assert_eq!(pushed.tree, built.tree);
        for count in 0..=values.len() {
            let expected: u32 = values[..count].iter().sum();
            assert_eq!(pushed.prefix(count as u64), expected);
        }
    }
}
