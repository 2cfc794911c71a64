//! Spans of time as a spec writes them: `"5s"`, `"500ms"`, `"1m30s"`, `"2h"` (Go's and
//! Docker's notation), or a bare number of seconds. Stored and shown in the same
//! notation, so what a user wrote reads back the same way.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Millis;

/// A span of time, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub Millis);

impl Span {
    pub const fn secs(s: u64) -> Span {
        Span(s * 1000)
    }

    pub fn millis(self) -> Millis {
        self.0
    }

    /// Parses `"1m30s"`, `"500ms"`, `"2.5s"`, `"0"`. Units: ms, s, m, h.
    pub fn parse(text: &str) -> Result<Span, String> {
        let bad = || {
            format!(
                "'{}' is not a duration: write a number and a unit, e.g. \"5s\", \"500ms\", \"1m30s\"",
                text.escape_debug()
            )
        };
        let text = text.trim();
        if text == "0" {
            return Ok(Span(0));
        }
        if text.is_empty() || text.len() > 32 {
            return Err(bad());
        }
        let mut total = 0f64;
        let mut rest = text;
        while !rest.is_empty() {
            let number_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let number: f64 = rest[..number_end].parse().map_err(|_| bad())?;
            rest = &rest[number_end..];
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_end] {
                "ms" => 1.0,
                "s" => 1000.0,
                "m" => 60_000.0,
                "h" => 3_600_000.0,
                _ => return Err(bad()),
            };
            rest = &rest[unit_end..];
            total += number * scale;
        }
        if !total.is_finite() || total > 1e15 {
            return Err(bad());
        }
        Ok(Span(total.round() as Millis))
    }
}

/// A duration given on a command line or in a query string: the spec's notation
/// (`250ms`, `30s`, `1m30s`) or a bare whole number of seconds (`30`). The API's `?wait=`
/// and the ingress's flags read durations with it.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok().map(std::time::Duration::from_secs);
    }
    Span::parse(text)
        .ok()
        .map(|s| std::time::Duration::from_millis(s.millis()))
}

impl fmt::Display for Span {
    /// The shortest exact form: `0s`, `500ms`, `5s`, `1m30s`, `2h`, `1500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms == 0 {
            return f.write_str("0s");
        }
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Span, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Seconds(f64),
        }
        match Written::deserialize(deserializer)? {
            Written::Text(text) => Span::parse(&text).map_err(serde::de::Error::custom),
            Written::Seconds(s) if s.is_finite() && (0.0..1e12).contains(&s) => {
                Ok(Span((s * 1000.0).round() as Millis))
            }
            Written::Seconds(s) => Err(serde::de::Error::custom(format!(
                "{s} is not a duration in seconds"
            ))),
        }
    }
}

impl JsonSchema for Span {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration: a number and a unit (ms, s, m, h), e.g. \"5s\", \"500ms\", \"1m30s\"",
            "example": "5s"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_from_flags_and_query_strings() {
        use std::time::Duration;
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        for bad in ["", "s", "-1s", "1x", "99999999999999999999m"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_and_shows_the_same_notation() {
        for (text, ms, shown) in [
            ("5s", 5000, "5s"),
            ("500ms", 500, "500ms"),
            ("1m30s", 90_000, "1m30s"),
            ("2h", 7_200_000, "2h"),
            ("0", 0, "0s"),
            ("0s", 0, "0s"),
            ("1.5s", 1500, "1500ms"),
        ] {
            let span = Span::parse(text).expect(text);
            assert_eq!(span, Span(ms), "{text}");
            assert_eq!(span.to_string(), shown);
            assert_eq!(Span::parse(shown), Ok(span));
        }
        for bad in ["", "5", "s", "5x", "-1s", "1e99s", "5 s"] {
            assert!(Span::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_strings_and_seconds() {
        let span: Span = serde_json::from_str("\"2s\"").expect("string");
        assert_eq!(span, Span(2000));
        let span: Span = serde_json::from_str("2.5").expect("seconds");
        assert_eq!(span, Span(2500));
        assert!(serde_json::from_str::<Span>("-1").is_err());
        assert_eq!(serde_json::to_string(&Span(2000)).expect("json"), "\"2s\"");
    }
}
