//! Query strings checked strictly: an unknown parameter is an error, not ignored, so a
//! typo (`?servce=web`) does not silently widen an answer.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use mycluster_core::span::Span;

use super::ApiError;

pub struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(
        query: Result<Query<HashMap<String, String>>, QueryRejection>,
        allowed: &[&str],
    ) -> Result<Params, ApiError> {
        let Query(map) = query?;
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter '{}'; allowed: {}",
                unknown.escape_debug(),
                allowed.join(", ")
            )));
        }
        Ok(Params(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse().map_err(|_| {
                    ApiError::bad_request(format!("query parameter '{key}' must be a whole number"))
                })
            })
            .transpose()
    }

    /// A duration like `30s`, `500ms`, `2m`, `1m30s`, or a number of seconds.
    pub fn duration(&self, key: &str) -> Result<Option<Duration>, ApiError> {
        self.get(key)
            .map(|v| {
                parse_duration(v).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "query parameter '{key}' must be a duration like 30s, 500ms or 2m"
                    ))
                })
            })
            .transpose()
    }
}

/// A bare number of seconds, or the notation of a spec's durations (`core::span`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok().map(Duration::from_secs);
    }
    Span::parse(text)
        .ok()
        .map(|s| Duration::from_millis(s.millis()))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        for bad in ["", "s", "-1s", "1x", "99999999999999999999m"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
