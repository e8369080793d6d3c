//! Outbound delivery (issue 12): where mail for a domain goes, and the queue runner that sends
//! it there.
//!
//! `route` decides (MX order, the null MX, the implicit MX, failures permanent or temporary)
//! without DNS; `dns` asks hickory's resolver through `[outbound] dns_servers` and hands the
//! answers to `route`. `deliver` makes one attempt at one domain over TCP with the sans-IO
//! SMTP client, `tls` its STARTTLS settings, and `runner` (spawned by `serve`) works through
//! the queue: retries, expiry, notifications.

pub mod counts;
pub mod deliver;
pub mod dkim;
pub mod dns;
pub mod route;
pub mod runner;
pub mod tls;

pub use dns::{DnsTimeouts, Router, SetupError};
pub use route::{Destination, Hop, RouteError, Status};
pub use runner::{LocalDelivery, Mailboxes, QueueHandle};

/// An RFC 5322 date in UTC, e.g. `Sun, 22 Nov 2026 06:16:22 +0000`.
pub fn rfc5322_date(at: std::time::SystemTime) -> String {
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let weekday = usize::try_from(days.rem_euclid(7))
        .ok()
        .and_then(|i| WEEKDAYS.get(i))
        .unwrap_or(&"Thu");
    let month_name = usize::try_from(month - 1)
        .ok()
        .and_then(|i| MONTHS.get(i))
        .unwrap_or(&"Jan");
    format!(
        "{weekday}, {day} {month_name} {year} {:02}:{:02}:{:02} +0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_328_182);
        assert_eq!(rfc5322_date(at), "Sun, 22 Nov 2026 06:16:22 +0000");
        assert_eq!(
            rfc5322_date(std::time::UNIX_EPOCH),
            "Thu, 1 Jan 1970 00:00:00 +0000"
        );
        let leap = std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    }
}
