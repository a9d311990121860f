//! Constructors for [`HistoryQuery`], which lives in `herald-proto`.

use herald_proto::frames::HistoryQuery;

/// `HistoryQuery::latest(100)`, `::before(seq, n)`, `::after(seq, n)`.
pub trait HistoryQueryExt: Sized {
    /// The newest `limit` messages, newest first.
    fn latest(limit: u32) -> Self;
    /// Up to `limit` messages with a `seq` below `seq`, newest first.
    fn before(seq: u64, limit: u32) -> Self;
    /// Up to `limit` messages with a `seq` above `seq`, oldest first.
    fn after(seq: u64, limit: u32) -> Self;
}

impl HistoryQueryExt for HistoryQuery {
    fn latest(limit: u32) -> Self {
        HistoryQuery { limit: Some(limit), ..HistoryQuery::default() }
    }

    fn before(seq: u64, limit: u32) -> Self {
        HistoryQuery { limit: Some(limit), before: Some(seq), ..HistoryQuery::default() }
    }

    fn after(seq: u64, limit: u32) -> Self {
        HistoryQuery { limit: Some(limit), after: Some(seq), ..HistoryQuery::default() }
    }
}
