//! Resume rules: whether a client that saw everything up to `since` can be
//! brought up to date from retained history, and how history pages are asked for.

use super::error::ApiError;

/// Most events in one history page.
pub const MAX_LIMIT: u64 = 1000;
/// Events in a history page when `limit` is not given.
pub const DEFAULT_LIMIT: u64 = 100;

/// What a `subscribe` with `since` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Every event after `since` is retained: replay them (possibly none).
    Replay { after: u64 },
    /// Some are gone, or `since` is ahead of the head: send the snapshot instead.
    NotRecovered,
}

impl Resume {
    /// Whether the client's gap can be filled (`recovered` on the wire).
    pub fn recovered(self) -> bool {
        matches!(self, Resume::Replay { .. })
    }
}

/// Decides a resume from `since`, given the channel's `head` and the oldest
/// retained `seq` (`None` when history is empty).
pub fn resume(since: u64, head: u64, oldest: Option<u64>) -> Resume {
    if since > head {
        return Resume::NotRecovered;
    }
    if since == head {
        return Resume::Replay { after: since };
    }
    match oldest {
        Some(o) if o <= since.saturating_add(1) => Resume::Replay { after: since },
        _ => Resume::NotRecovered,
    }
}

/// A validated `?since=&limit=` query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    pub since: u64,
    pub limit: u64,
}

fn non_negative(name: &str, raw: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>().map_err(|_| {
        ApiError::invalid(
            name,
            format!("'{name}' must be a non-negative integer, got '{raw}'"),
        )
    })
}

impl HistoryQuery {
    /// Parses the query pairs of a history request. `since` defaults to 0 and
    /// `limit` to [`DEFAULT_LIMIT`]; `limit` must be 1–[`MAX_LIMIT`].
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ApiError> {
        let mut q = HistoryQuery {
            since: 0,
            limit: DEFAULT_LIMIT,
        };
        for (k, v) in pairs {
            match k {
                "since" => q.since = non_negative("since", v)?,
                "limit" => {
                    q.limit = non_negative("limit", v)?;
                    if !(1..=MAX_LIMIT).contains(&q.limit) {
                        return Err(ApiError::invalid(
                            "limit",
                            format!("'limit' must be 1 to {MAX_LIMIT}, got {}", q.limit),
                        ));
                    }
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_since_inside_the_window_replays_after_it() {
        assert_eq!(resume(5, 10, Some(3)), Resume::Replay { after: 5 });
        assert_eq!(
            resume(5, 10, Some(6)),
            Resume::Replay { after: 5 },
            "the first missing event is retained"
        );
        assert_eq!(resume(0, 10, Some(1)), Resume::Replay { after: 0 });
    }

    #[test]
    fn a_since_older_than_the_window_is_not_recovered() {
        assert_eq!(resume(5, 10, Some(7)), Resume::NotRecovered);
        assert_eq!(resume(5, 10, None), Resume::NotRecovered);
        assert_eq!(resume(0, 10, Some(2)), Resume::NotRecovered);
    }

    #[test]
    fn a_since_at_the_head_is_recovered_with_nothing_to_replay() {
        assert_eq!(resume(10, 10, None), Resume::Replay { after: 10 });
        assert_eq!(resume(0, 0, None), Resume::Replay { after: 0 });
    }

    #[test]
    fn a_since_ahead_of_the_head_is_not_recovered() {
        assert_eq!(resume(11, 10, Some(1)), Resume::NotRecovered);
        assert_eq!(resume(u64::MAX, 10, Some(1)), Resume::NotRecovered);
    }

    #[test]
    fn history_query_defaults_and_bounds() {
        assert_eq!(
            HistoryQuery::parse([]).unwrap(),
            HistoryQuery {
                since: 0,
                limit: 100
            }
        );
        assert_eq!(
            HistoryQuery::parse([("since", "7"), ("limit", "1000")]).unwrap(),
            HistoryQuery {
                since: 7,
                limit: 1000
            }
        );
        for (k, v) in [
            ("since", "-1"),
            ("since", "abc"),
            ("since", "99999999999999999999999"),
            ("limit", "0"),
            ("limit", "1001"),
            ("limit", "x"),
        ] {
            let e = HistoryQuery::parse([(k, v)]).unwrap_err();
            assert_eq!(e.details.unwrap()["field"], k, "{k}={v}");
        }
    }
}
