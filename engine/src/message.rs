//! What flows between operator instances.
//!
//! Every channel carries [`Message`]s in order. The runtime guarantees, per channel:
//! - watermarks never decrease;
//! - a barrier `n` is sent after every record that belongs to checkpoint `n` and before any that
//!   belongs to `n + 1`;
//! - `End` is the last message.

use crate::record::Batch;

/// Event time in epoch milliseconds below which no more records are expected on a channel.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Watermark(pub i64);

impl Watermark {
    /// The watermark that closes every window: sent when a bounded input ends.
    pub const MAX: Watermark = Watermark(i64::MAX);
    pub const MIN: Watermark = Watermark(i64::MIN);
}

/// Number of a checkpoint. Distinct type so that checkpoint ids and record counts cannot be mixed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Epoch(pub u64);

/// A checkpoint barrier (Chandy–Lamport marker): everything before it on a channel belongs to
/// checkpoint `epoch`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Barrier {
    pub epoch: Epoch,
    /// Savepoints stop the job once complete.
    pub savepoint: bool,
}

/// One message on a data channel.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Data(Batch),
    Watermark(Watermark),
    Barrier(Barrier),
    /// The sender has had no data for its idle timeout: until it sends data or a watermark
    /// again, it does not hold back the receiver's watermark.
    Idle,
    /// The sender will send nothing more.
    End,
}
