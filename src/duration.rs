//! Go-style durations (`90s`, `15m`, `1h30m`), the format Kubernetes users write and CEL's
//! `duration()` accepts, so one string is valid in both places.
use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (write it like 90s, 15m or 1h30m)")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

/// Parses a Go duration of non-negative whole units: `h`, `m`, `s`, `ms`.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err("expected a number"));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| err("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = match &rest[..unit_len] {
            "h" => Duration::from_secs(3600),
            "m" => Duration::from_secs(60),
            "s" => Duration::from_secs(1),
            "ms" => Duration::from_millis(1),
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit (use h, m, s or ms)")),
        };
        rest = &rest[unit_len..];
        let part = unit.checked_mul(u32::try_from(value).map_err(|_| err("number too large"))?);
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| err("too long"))?;
    }
    Ok(total)
}

/// Formats a duration the way `parse` reads it, e.g. `1h30m`, `10m`, `45s`.
pub fn format(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// The JSON-schema pattern matching what `parse` accepts; used in CRD schemas.
pub const PATTERN: &str = r"^(0|([0-9]+(h|m|s|ms))+)$";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn refuses_malformed_durations_with_a_reason() {
        assert_eq!(parse("15").unwrap_err().reason, "missing unit");
        assert_eq!(
            parse("1d").unwrap_err().reason,
            "unknown unit (use h, m, s or ms)"
        );
        assert_eq!(parse("").unwrap_err().reason, "empty");
        assert_eq!(parse("-5m").unwrap_err().reason, "expected a number");
        assert!(parse("99999999999h").is_err());
    }

    #[test]
    fn format_round_trips() {
        for s in ["1h30m", "10m", "45s", "2h"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
