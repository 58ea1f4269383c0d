//! Balances at a past instant and statements over a window of time: which instants a client
//! may ask about, and the arithmetic that ties a statement's figures together.
//!
//! Instants are kept to the millisecond, as entries' `createdAt` are stored: an instant finer
//! than that is refused rather than rounded, because rounding would move an entry stamped in
//! the same millisecond across a window's edge without saying so.

use std::str::FromStr;

use chrono::{DateTime, Duration, Timelike, Utc};

use crate::{Balance, DomainError};

/// The longest window one statement covers. Its totals are summed over every entry of the
/// window on each request, so the window bounds what one request may cost; a year covers the
/// periods statements are asked for (a month, a quarter, a year) with room for a leap day.
pub const MAX_STATEMENT_DAYS: i64 = 366;

/// An instant as a client writes it: RFC 3339 with an offset (`2026-01-31T23:59:59.250Z`),
/// at most millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment(DateTime<Utc>);

impl Moment {
    pub fn at(self) -> DateTime<Utc> {
        self.0
    }

    /// The instant of a balance read: not after `now`, since a balance of the future would
    /// change under its reader as entries arrive.
    pub fn as_of(self, now: DateTime<Utc>) -> Result<DateTime<Utc>, DomainError> {
        if self.0 > now {
            return Err(DomainError::invalid("asOf", "must not be in the future"));
        }
        Ok(self.0)
    }
}

impl FromStr for Moment {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, DomainError> {
        let at = DateTime::parse_from_rfc3339(s).map_err(|_| {
            DomainError::invalid(
                "instant",
                "must be an RFC 3339 date-time with an offset, such as 2026-01-31T23:59:59Z",
            )
        })?;
        if at.nanosecond() % 1_000_000 != 0 {
            return Err(DomainError::invalid("instant", "must be given to the millisecond at most"));
        }
        Ok(Self(at.with_timezone(&Utc)))
    }
}

/// The window of a statement: entries with `from <= createdAt < to`. `from` is inclusive and
/// `to` exclusive so that consecutive statements (`to` of one the `from` of the next) count
/// each entry exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementWindow {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

impl StatementWindow {
    /// `from < to <= now`, at most [`MAX_STATEMENT_DAYS`] apart. A window that ends after `now`
    /// would have a closing balance that is not closed yet.
    pub fn new(from: Moment, to: Moment, now: DateTime<Utc>) -> Result<Self, DomainError> {
        let (from, to) = (from.at(), to.at());
        if to <= from {
            return Err(DomainError::invalid("to", "must be later than from"));
        }
        if to > now {
            return Err(DomainError::invalid("to", "must not be in the future"));
        }
        if to - from > Duration::days(MAX_STATEMENT_DAYS) {
            return Err(DomainError::invalid("to", format!("must be at most {MAX_STATEMENT_DAYS} days after from")));
        }
        Ok(Self { from, to })
    }

    pub fn from(self) -> DateTime<Utc> {
        self.from
    }

    pub fn to(self) -> DateTime<Utc> {
        self.to
    }
}

/// What the entries of a window add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatementTotals {
    pub debits: i64,
    pub credits: i64,
    pub entries: i64,
}

impl StatementTotals {
    /// Whether the window's entries take `opening` to `closing`:
    /// `opening + credits − debits = closing`, in arithmetic wide enough for any stored values.
    /// Every entry's `balanceAfter` is its predecessor's plus or minus its amount, so this
    /// fails only for a broken history.
    pub fn reconcile(&self, opening: Balance, closing: Balance) -> bool {
        i128::from(opening.minor()) + i128::from(self.credits) - i128::from(self.debits) == i128::from(closing.minor())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moment(s: &str) -> Moment {
        s.parse().expect("a moment")
    }

    #[test]
    fn moments_are_rfc3339_to_the_millisecond() {
        assert_eq!(moment("2026-01-31T23:59:59.250+01:00").at().to_rfc3339(), "2026-01-31T22:59:59.250+00:00");
        assert_eq!(moment("2026-01-31T23:59:59Z").at().timestamp_millis() % 1000, 0);
        for bad in ["", "2026-01-31", "2026-01-31T23:59:59", "yesterday", "2026-13-01T00:00:00Z", "1706745599"] {
            let e = bad.parse::<Moment>().expect_err(bad);
            assert!(e.reason().starts_with("must be an RFC 3339 date-time"), "{bad}: {e}");
        }
        let e = "2026-01-31T23:59:59.2501Z".parse::<Moment>().expect_err("sub-millisecond");
        assert_eq!(e.reason(), "must be given to the millisecond at most");
    }

    #[test]
    fn a_balance_is_never_asked_of_the_future() {
        let now = moment("2026-02-01T00:00:00Z").at();
        assert_eq!(moment("2026-02-01T00:00:00Z").as_of(now), Ok(now));
        let e = moment("2026-02-01T00:00:00.001Z").as_of(now).expect_err("future");
        assert_eq!((e.field(), e.reason()), ("asOf", "must not be in the future"));
    }

    #[test]
    fn a_window_is_ordered_past_and_bounded() {
        let now = moment("2027-06-01T00:00:00Z").at();
        let window = |from: &str, to: &str| StatementWindow::new(moment(from), moment(to), now);
        let w = window("2026-01-01T00:00:00Z", "2027-01-02T00:00:00Z").expect("366 days");
        assert_eq!((w.from(), w.to()), (moment("2026-01-01T00:00:00Z").at(), moment("2027-01-02T00:00:00Z").at()));
        let refused = |from: &str, to: &str| window(from, to).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(refused("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"), Err("to must be later than from".into()));
        assert_eq!(refused("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z"), Err("to must be later than from".into()));
        assert_eq!(
            refused("2026-01-01T00:00:00Z", "2027-06-01T00:00:00.001Z"),
            Err("to must not be in the future".into())
        );
        assert_eq!(
            refused("2026-01-01T00:00:00Z", "2027-01-02T00:00:00.001Z"),
            Err("to must be at most 366 days after from".into())
        );
    }

    #[test]
    fn totals_reconcile_the_opening_and_closing_balances() {
        let totals = StatementTotals { debits: 30, credits: 100, entries: 3 };
        assert!(totals.reconcile(Balance(5), Balance(75)));
        assert!(!totals.reconcile(Balance(5), Balance(76)));
        let extreme = StatementTotals { debits: i64::MAX, credits: i64::MAX, entries: 2 };
        assert!(extreme.reconcile(Balance(i64::MIN), Balance(i64::MIN)));
    }
}
