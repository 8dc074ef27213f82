//! Selective acknowledgement: the blocks a receiver reports (RFC 2018 §4, D-SACK of RFC 2883) and
//! the sender's scoreboard with the loss-recovery rules of RFC 6675 (IsLost, SetPipe, NextSeg).
//!
//! Everything is in absolute sequence numbers ([`SeqNum`]) and bytes, and stays correct across
//! the 2^32 wrap because every range lies within one window (less than 2^31) of SND.UNA / RCV.NXT.
//!
//! The receiver's side is in blocks.rs ([`SackBlocksBuilder`]), the sender's scoreboard in
//! scoreboard.rs ([`SackScoreboard`]); the block arithmetic both use is here.

mod blocks;
mod scoreboard;

pub use blocks::{duplicate_of, SackBlocks, SackBlocksBuilder};
pub use scoreboard::{NextSeg, SackScoreboard, SackUpdate};

use crate::wire::{SackBlock, SeqNum};

/// RFC 6675 §2: DupThresh, the number of duplicate ACKs (or SACKed segments) that signal a loss.
pub const DUP_THRESH: u32 = 3;

fn block(start: SeqNum, end: SeqNum) -> SackBlock {
    SackBlock { start, end }
}

fn len(b: SackBlock) -> u32 {
    if b.end > b.start {
        b.end - b.start
    } else {
        0
    }
}

/// `inner` lies within `outer`.
fn within(inner: SackBlock, outer: SackBlock) -> bool {
    inner.start >= outer.start && inner.end <= outer.end
}

fn overlaps(a: SackBlock, b: SackBlock) -> bool {
    a.start < b.end && b.start < a.end
}

#[cfg(test)]
mod test_support {
    use super::block;
    use crate::wire::{SackBlock, SeqNum};

    /// Bases for every scenario: an ordinary one and one that crosses 2^32 mid-window.
    pub(super) const BASES: [u32; 2] = [1_000_000, u32::MAX - 4_500];

    /// A block at offsets relative to `base`.
    pub(super) fn rel(base: u32, start: u32, end: u32) -> SackBlock {
        block(SeqNum(base) + start, SeqNum(base) + end)
    }
}
