//! Wall-clock helpers: RFC 3339 with milliseconds, as SPEC's examples show.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Unix time now, in microseconds.
pub fn now_us() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as i64
}

/// `2025-01-15T10:30:00.123Z` for a unix-microsecond instant.
pub fn format_us(us: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parse an RFC 3339 timestamp into unix microseconds.
pub fn parse_rfc3339_us(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_ms() {
        let us = parse_rfc3339_us("2025-01-15T10:30:00.123Z").unwrap();
        assert_eq!(format_us(us), "2025-01-15T10:30:00.123Z");
        assert!(parse_rfc3339_us("yesterday").is_none());
    }
}
