//! Server pushback: `Retry-After` and `grpc-retry-pushback-ms`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The gRPC pushback header (and trailers-only metadata key).
pub(crate) const GRPC_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// What the server asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushback {
    /// No (usable) hint: the normal backoff applies.
    None,
    /// Wait this long before the next attempt.
    Delay(Duration),
    /// Do not retry.
    Stop,
}

/// Reads `grpc-retry-pushback-ms` (gRPC A6): a non-negative decimal
/// integer of milliseconds is a delay; a negative or malformed value means
/// the server asks the client not to retry.
pub(crate) fn grpc(value: &[u8]) -> Pushback {
    match digits(value.trim_ascii()) {
        Some(ms) => Pushback::Delay(Duration::from_millis(ms)),
        None => Pushback::Stop,
    }
}

/// Reads `Retry-After`: delta-seconds, or an HTTP-date (compared with
/// `now`, the wall clock). A malformed value is ignored (`Pushback::None`);
/// a date in the past is a delay of zero.
pub(crate) fn retry_after(value: &[u8], now: SystemTime) -> Pushback {
    let value = value.trim_ascii();
    if let Some(secs) = digits(value) {
        return Pushback::Delay(Duration::from_secs(secs));
    }
    match http_date(value) {
        Some(at) => Pushback::Delay(at.duration_since(now).unwrap_or(Duration::ZERO)),
        None => Pushback::None,
    }
}

/// 1 or more ASCII digits, saturating at `u64::MAX`.
fn digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// Parses an HTTP-date (RFC 9110 §5.6.7) in any of its three forms:
/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the obsolete RFC 850 form
/// (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37
/// 1994`). The weekday is not checked.
pub(crate) fn http_date(b: &[u8]) -> Option<SystemTime> {
    let s = std::str::from_utf8(b).ok()?;
    let (day, month, year, time) = if let Some((_, rest)) = s.split_once(", ") {
        let rest = rest.strip_suffix(" GMT")?;
        if rest.len() == 20 && rest.as_bytes()[2] == b' ' {
            // IMF-fixdate: "06 Nov 1994 08:49:37"
            let (date, time) = rest.split_at(12);
            let mut parts = date.trim_end().split(' ');
            let (d, m, y) = (parts.next()?, parts.next()?, parts.next()?);
            (num(d, 2)?, month(m)?, num(y, 4)?, time)
        } else if rest.len() == 18 && rest.as_bytes()[2] == b'-' {
            // RFC 850: "06-Nov-94 08:49:37"; two-digit years 70-99 are 19xx
            let (date, time) = rest.split_at(10);
            let mut parts = date.trim_end().split('-');
            let (d, m, y) = (parts.next()?, parts.next()?, parts.next()?);
            let y = num(y, 2)?;
            (
                num(d, 2)?,
                month(m)?,
                if y < 70 { 2000 + y } else { 1900 + y },
                time,
            )
        } else {
            return None;
        }
    } else {
        // asctime: "Sun Nov  6 08:49:37 1994"
        if s.len() != 24 {
            return None;
        }
        let m = month(s.get(4..7)?)?;
        let d = num(s.get(8..10)?.trim_start(), 2).or_else(|| num(s.get(9..10)?, 1))?;
        (d, m, num(s.get(20..24)?, 4)?, s.get(11..19)?)
    };
    let t = time.as_bytes();
    if t.len() != 8 || t[2] != b':' || t[5] != b':' {
        return None;
    }
    let (h, mi, se) = (
        num(&time[0..2], 2)?,
        num(&time[3..5], 2)?,
        num(&time[6..8], 2)?,
    );
    if !(1..=31).contains(&day) || h > 23 || mi > 59 || se > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86400 + h * 3600 + mi * 60 + se;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

fn num(s: &str, len: usize) -> Option<u64> {
    if s.len() == len {
        digits(s.as_bytes())
    } else {
        None
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn month(s: &str) -> Option<u64> {
    MONTHS.iter().position(|m| *m == s).map(|i| i as u64 + 1)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`), for years from 1970.
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn grpc_pushback() {
        assert_eq!(grpc(b"0"), Pushback::Delay(Duration::ZERO));
        assert_eq!(grpc(b"1500"), Pushback::Delay(Duration::from_millis(1500)));
        assert_eq!(
            grpc(b"99999999999999999999999"),
            Pushback::Delay(Duration::from_millis(u64::MAX))
        );
        for bad in [
            &b"-1"[..],
            b"-0",
            b"",
            b"1.5",
            b"+5",
            b"abc",
            b"10ms",
            b"1 0",
        ] {
            assert_eq!(grpc(bad), Pushback::Stop, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_seconds() {
        let now = at(1_000_000);
        assert_eq!(
            retry_after(b"3", now),
            Pushback::Delay(Duration::from_secs(3))
        );
        assert_eq!(retry_after(b" 0 ", now), Pushback::Delay(Duration::ZERO));
        for bad in [&b"-3"[..], b"", b"3.5", b"soon", b"3s", b"Sun, 06 Nov"] {
            assert_eq!(retry_after(bad, now), Pushback::None, "{bad:?}");
        }
    }

    #[test]
    fn http_dates_in_all_three_forms() {
        // 1994-11-06 08:49:37 UTC
        let want = at(784_111_777);
        assert_eq!(http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(want));
        assert_eq!(http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(want));
        assert_eq!(http_date(b"Sun Nov  6 08:49:37 1994"), Some(want));
        // leap years and month ends
        assert_eq!(http_date(b"Thu, 01 Jan 1970 00:00:00 GMT"), Some(at(0)));
        assert_eq!(
            http_date(b"Tue, 29 Feb 2000 23:59:59 GMT"),
            Some(at(951_868_799))
        );
        assert_eq!(
            http_date(b"Fri, 31 Dec 2999 00:00:00 GMT"),
            Some(at(32_503_593_600))
        );
        for bad in [
            &b"Sun, 06 Nov 1994 08:49:37 UTC"[..],
            b"Sun, 6 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Foo 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 24:49:37 GMT",
            b"Sun, 32 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1969 08:49:37 GMT",
            b"Sun, 06 Nov 1994 08-49-37 GMT",
            b"Sun Nov 6 08:49:37 1994",
            b"06 Nov 1994 08:49:37 GMT",
            b"\xff\xfe",
        ] {
            assert_eq!(http_date(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn retry_after_dates_are_relative_to_now() {
        let date = b"Sun, 06 Nov 1994 08:49:37 GMT";
        let now = at(784_111_777 - 5);
        assert_eq!(
            retry_after(date, now),
            Pushback::Delay(Duration::from_secs(5))
        );
        // in the past: retry now
        assert_eq!(
            retry_after(date, at(784_111_777 + 60)),
            Pushback::Delay(Duration::ZERO)
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = grpc(&bytes);
            let _ = retry_after(&bytes, SystemTime::now());
        }

        #[test]
        fn imf_fixdate_roundtrips(secs in 0u64..32_503_680_000) {
            // format with the civil-from-days inverse
            let days = secs / 86400;
            let (y, m, d) = civil_from_days(days);
            let s = format!("Mon, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
                MONTHS[m as usize - 1], secs % 86400 / 3600, secs % 3600 / 60, secs % 60);
            prop_assert_eq!(http_date(s.as_bytes()), Some(at(secs)));
        }
    }

    fn civil_from_days(z: u64) -> (u64, u64, u64) {
        let z = z + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (if m <= 2 { y + 1 } else { y }, m, d)
    }
}
