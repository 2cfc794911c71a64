//! Query strings checked strictly: an unknown parameter is an error, not ignored, so a
//! typo (`?servce=web`) does not silently widen an answer.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use mycluster_core::span::parse_duration;

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

    /// `true` or `false` (also `1`/`0`; absent: `None`).
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        self.get(key)
            .map(|v| match v {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(ApiError::bad_request(format!(
                    "query parameter '{key}' must be true or false"
                ))),
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
