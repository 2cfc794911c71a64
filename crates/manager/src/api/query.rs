//! Query strings checked strictly: an unknown parameter is an error, not ignored, so a
//! typo (`?servce=web`) does not silently widen an answer.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;

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

    /// A duration like `30s`, `500ms`, `2m`, or a number of seconds.
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

pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        _ => None,
    }
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
        for bad in ["", "s", "-1s", "1h", "1.5s", "99999999999999999999m"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
