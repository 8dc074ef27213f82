//! The endpoint's TIME-WAIT table (RFC 9293 §3.6, §3.10.7.4): what is left of each connection
//! that closed first, for 2·MSL, in 36 bytes a record plus 16 a timer, so that a busy server's
//! tens of thousands of entries stay small (issue 10 asks for at most 64 bytes each).
//!
//! A record keeps only what the rules of [`TimeWait`] need and neither the key (the 4-tuple)
//! nor the endpoint (2·MSL, a common time base) already knows: times are whole milliseconds
//! after the table's epoch, and a timestamp clock is re-expressed on that epoch. Records are
//! expanded into a [`TimeWait`] to apply the rules and compacted again after.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::tcp::{FourTuple, TimeWait, TimeWaitTimestamps, TimestampClock};
use crate::wire::SeqNum;
use crate::FastHashMap;

/// Milliseconds after the epoch, as a record stores its deadline.
type Millis = u32;

/// The epoch moves forward before millisecond offsets could come near wrapping.
const REBASE_AFTER: Duration = Duration::from_millis(1 << 31);

/// One TIME-WAIT entry as the table stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CompactTimeWait {
    snd_nxt: SeqNum,
    rcv_nxt: SeqNum,
    /// When the entry ends.
    deadline: Millis,
    /// The TSval our clock reads at the epoch, and TS.Recent; meaningful with `timestamps`.
    ts_offset: u32,
    ts_recent: u32,
    window: u16,
    timestamps: bool,
}

/// The TIME-WAIT entries of an endpoint and their expiry timers.
#[derive(Debug)]
pub(super) struct TimeWaitTable {
    epoch: Instant,
    /// 2·MSL, the span of every entry (and of its restart by a retransmitted FIN).
    duration: Duration,
    entries: FastHashMap<FourTuple, CompactTimeWait>,
    /// Deadlines, earliest first; an entry whose record has since moved its deadline or left is
    /// stale and skipped.
    expiries: BinaryHeap<Reverse<(Millis, TupleKey)>>,
}

/// A 4-tuple in a form the expiry heap can order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct TupleKey([u8; 12]);

impl TupleKey {
    fn new(tuple: &FourTuple) -> Self {
        let mut key = [0u8; 12];
        key[..4].copy_from_slice(&tuple.local.ip().octets());
        key[4..6].copy_from_slice(&tuple.local.port().to_be_bytes());
        key[6..10].copy_from_slice(&tuple.remote.ip().octets());
        key[10..].copy_from_slice(&tuple.remote.port().to_be_bytes());
        TupleKey(key)
    }

    fn tuple(&self) -> FourTuple {
        let k = &self.0;
        let addr = |ip: &[u8], port: &[u8]| {
            std::net::SocketAddrV4::new(
                std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]),
                u16::from_be_bytes([port[0], port[1]]),
            )
        };
        FourTuple {
            local: addr(&k[..4], &k[4..6]),
            remote: addr(&k[6..10], &k[10..]),
        }
    }
}

impl TimeWaitTable {
    pub(super) fn new(epoch: Instant, duration: Duration) -> Self {
        TimeWaitTable {
            epoch,
            duration,
            entries: FastHashMap::default(),
            expiries: BinaryHeap::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn contains(&self, tuple: &FourTuple) -> bool {
        self.entries.contains_key(tuple)
    }

    pub(super) fn remove(&mut self, tuple: &FourTuple) {
        self.entries.remove(tuple);
        self.discard_stale();
    }

    /// The entry of `tuple`, expanded.
    pub(super) fn get(&self, tuple: &FourTuple) -> Option<TimeWait> {
        let record = self.entries.get(tuple)?;
        let mut expanded = TimeWait::new(
            *tuple,
            record.snd_nxt,
            record.rcv_nxt,
            record.window,
            self.epoch,
            self.duration,
        );
        expanded.deadline = self.instant(record.deadline);
        if record.timestamps {
            expanded = expanded.with_timestamps(TimeWaitTimestamps {
                clock: TimestampClock::new(self.epoch, record.ts_offset),
                recent: record.ts_recent,
            });
        }
        Some(expanded)
    }

    /// Adds or replaces the entry of `record.tuple`, arming its timer when the deadline moved.
    pub(super) fn insert(&mut self, record: &TimeWait, now: Instant) {
        self.rebase_if_due(now);
        let compact = CompactTimeWait {
            snd_nxt: record.snd_nxt,
            rcv_nxt: record.rcv_nxt,
            deadline: self.millis_ceil(record.deadline),
            ts_offset: record
                .timestamps
                .map_or(0, |ts| ts.clock.rebased(self.epoch).offset()),
            ts_recent: record.timestamps.map_or(0, |ts| ts.recent),
            window: record.window,
            timestamps: record.timestamps.is_some(),
        };
        let previous = self.entries.insert(record.tuple, compact);
        if previous.map(|p| p.deadline) != Some(compact.deadline) {
            self.expiries
                .push(Reverse((compact.deadline, TupleKey::new(&record.tuple))));
            self.discard_stale();
        }
    }

    /// The earliest deadline of a live entry.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.expiries
            .peek()
            .map(|Reverse((deadline, _))| self.instant(*deadline))
    }

    /// Removes the entries whose 2·MSL is over at `now`.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((deadline, key))) = self.expiries.peek() {
            if self.instant(deadline) > now {
                break;
            }
            self.expiries.pop();
            let tuple = key.tuple();
            if self.entries.get(&tuple).map(|e| e.deadline) == Some(deadline) {
                self.entries.remove(&tuple);
            }
        }
        self.discard_stale();
    }

    /// Pops timers of entries that left or moved, so that `next_deadline` names a live one.
    fn discard_stale(&mut self) {
        while let Some(&Reverse((deadline, key))) = self.expiries.peek() {
            let live = self.entries.get(&key.tuple()).map(|e| e.deadline) == Some(deadline);
            if live {
                break;
            }
            self.expiries.pop();
        }
    }

    fn instant(&self, millis: Millis) -> Instant {
        self.epoch + Duration::from_millis(u64::from(millis))
    }

    /// `at` in milliseconds after the epoch, rounded up so that an entry never ends early.
    fn millis_ceil(&self, at: Instant) -> Millis {
        let since = at.saturating_duration_since(self.epoch);
        let millis = since.as_nanos().div_ceil(1_000_000);
        Millis::try_from(millis).unwrap_or(Millis::MAX)
    }

    /// Moves the epoch to `now` (in whole milliseconds) once offsets from it grow large, so
    /// that they never wrap: every deadline and clock offset is re-expressed, once in 24 days.
    fn rebase_if_due(&mut self, now: Instant) {
        let since = now.saturating_duration_since(self.epoch);
        if since < REBASE_AFTER {
            return;
        }
        if self.entries.is_empty() {
            self.expiries.clear();
            self.epoch = now;
            return;
        }
        let shift = since.as_millis() as Millis;
        let new_epoch = self.epoch + Duration::from_millis(u64::from(shift));
        for record in self.entries.values_mut() {
            record.deadline = record.deadline.saturating_sub(shift);
            record.ts_offset = record.ts_offset.wrapping_add(shift);
        }
        self.expiries = self
            .entries
            .iter()
            .map(|(tuple, record)| Reverse((record.deadline, TupleKey::new(tuple))))
            .collect();
        self.epoch = new_epoch;
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::tuple;

    use super::*;

    const MSL2: Duration = Duration::from_secs(60);

    #[test]
    fn a_record_and_its_timer_fit_in_64_bytes() {
        let bucket = std::mem::size_of::<(FourTuple, CompactTimeWait)>();
        let timer = std::mem::size_of::<Reverse<(Millis, TupleKey)>>();
        assert_eq!((bucket, timer), (36, 16));
        assert!(bucket + timer <= 64);
    }

    #[test]
    fn a_record_comes_back_as_it_went_in() {
        let epoch = Instant::now();
        let now = epoch + Duration::from_millis(1234);
        let mut table = TimeWaitTable::new(epoch, MSL2);
        let clock_base = epoch + Duration::from_micros(500_300);
        let record = TimeWait::new(tuple(1), SeqNum(7), SeqNum(u32::MAX), 512, now, MSL2)
            .with_timestamps(TimeWaitTimestamps {
                clock: TimestampClock::new(clock_base, 4_000_000_000),
                recent: 99,
            });
        table.insert(&record, now);
        let back = table.get(&tuple(1)).unwrap();
        assert_eq!(
            (back.tuple, back.snd_nxt, back.rcv_nxt, back.window),
            (record.tuple, record.snd_nxt, record.rcv_nxt, record.window)
        );
        assert_eq!(back.deadline, record.deadline);
        assert_eq!(back.duration, MSL2);
        let (ours, theirs) = (record.timestamps.unwrap(), back.timestamps.unwrap());
        assert_eq!(theirs.recent, 99);
        // The re-based clock never reads earlier than the old one, and at most a tick later.
        for ms in [0u64, 1, 499, 500, 501, 59_999] {
            let at = now + Duration::from_micros(ms * 1000 + 700);
            let (old, new) = (ours.clock.tsval(at), theirs.clock.tsval(at));
            assert!(new.wrapping_sub(old) <= 1, "{ms} ms: {old} -> {new}");
        }
    }

    #[test]
    fn entries_expire_at_their_deadline_and_a_restart_moves_it() {
        let epoch = Instant::now();
        let mut table = TimeWaitTable::new(epoch, MSL2);
        table.insert(
            &TimeWait::new(tuple(1), SeqNum(1), SeqNum(1), 0, epoch, MSL2),
            epoch,
        );
        let later = epoch + Duration::from_secs(10);
        table.insert(
            &TimeWait::new(tuple(2), SeqNum(1), SeqNum(1), 0, later, MSL2),
            later,
        );
        assert_eq!(table.next_deadline(), Some(epoch + MSL2));
        // Entry 1 restarts its 2·MSL at 30 s: its first timer is stale.
        let restart = epoch + Duration::from_secs(30);
        let mut one = table.get(&tuple(1)).unwrap();
        one.deadline = restart + MSL2;
        table.insert(&one, restart);
        table.expire(epoch + MSL2);
        assert_eq!(table.len(), 2);
        assert_eq!(table.next_deadline(), Some(later + MSL2));
        table.expire(later + MSL2);
        assert!(!table.contains(&tuple(2)) && table.contains(&tuple(1)));
        table.expire(restart + MSL2 - Duration::from_millis(1));
        assert_eq!(table.len(), 1);
        table.expire(restart + MSL2);
        assert!(table.is_empty());
        assert_eq!(table.next_deadline(), None);
    }

    #[test]
    fn the_epoch_moves_before_offsets_wrap_and_keeps_every_entry() {
        let epoch = Instant::now();
        let mut table = TimeWaitTable::new(epoch, MSL2);
        let late = epoch + REBASE_AFTER - Duration::from_secs(1);
        let record = TimeWait::new(tuple(1), SeqNum(1), SeqNum(2), 0, late, MSL2).with_timestamps(
            TimeWaitTimestamps {
                clock: TimestampClock::new(epoch, 5),
                recent: 1,
            },
        );
        table.insert(&record, late);
        let now = late + Duration::from_secs(2);
        table.insert(
            &TimeWait::new(tuple(2), SeqNum(1), SeqNum(2), 0, now, MSL2),
            now,
        );
        assert!(table.epoch > epoch);
        let back = table.get(&tuple(1)).unwrap();
        assert_eq!(back.deadline, record.deadline);
        let at = now + Duration::from_secs(1);
        assert_eq!(
            back.timestamps.unwrap().clock.tsval(at),
            record.timestamps.unwrap().clock.tsval(at)
        );
        assert_eq!(table.next_deadline(), Some(record.deadline));
    }
}
