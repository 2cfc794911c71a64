//! Logs as people ask for them and read them (`mycluster logs`, `GET
//! /api/v1/service/<name>/logs`): the options of a request (`since` in any of the forms
//! `docker logs --since` takes, `tail`, the flags), the RFC 3339 times lines are shown
//! with, and the prefix that says which replica wrote a line. Pure: the caller passes
//! the time.

use crate::time::civil_from_days;

/// Nanoseconds since the Unix epoch: the time of a log line (the Docker engine keeps
/// them to the nanosecond).
pub type Nanos = u64;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// `2026-11-24T19:25:45.123456789Z`: RFC 3339 in UTC, always nine digits of fraction, so
/// timestamped lines line up.
pub fn rfc3339(time: Nanos) -> String {
    let secs = time / NANOS_PER_SEC;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        time % NANOS_PER_SEC
    )
}

/// The inverse of `civil_from_days` (Howard Hinnant's days-from-civil).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads `2026-11-24T19:25:45Z`, with a fraction of a second, a space for the `T`, an
/// offset (`+02:00`) instead of `Z`, or a bare date (its midnight); without a zone the
/// time is UTC. `None` for anything else, and for times before 1970.
pub fn parse_rfc3339(text: &str) -> Option<Nanos> {
    let text = text.trim();
    let b = text.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = text.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month as u32, day as u32);
    // A day that does not exist (February 30th) comes back as another date.
    if civil_from_days(days) != (year, month as u32, day as u32) {
        return None;
    }
    let mut secs = days * 86_400;
    let mut nanos = 0i64;
    let mut rest = &text[10..];
    if !rest.is_empty() {
        let clock = rest.strip_prefix(['T', 't', ' '])?;
        let c = clock.as_bytes();
        if c.len() < 8 || c[2] != b':' || c[5] != b':' {
            return None;
        }
        let two = |from: usize| -> Option<i64> {
            let part = clock.get(from..from + 2)?;
            part.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| part.parse().ok())?
        };
        let (h, m, s) = (two(0)?, two(3)?, two(6)?);
        if h > 23 || m > 59 || s > 60 {
            return None;
        }
        secs += h * 3600 + m * 60 + s;
        rest = &clock[8..];
        if let Some(fraction) = rest.strip_prefix('.') {
            let end = fraction
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(fraction.len());
            if end == 0 {
                return None;
            }
            let kept: String = fraction[..end]
                .chars()
                .chain("000000000".chars())
                .take(9)
                .collect();
            nanos = kept.parse().ok()?;
            rest = &fraction[end..];
        }
        match rest {
            "" | "Z" | "z" => {}
            zone => {
                let sign = match zone.as_bytes().first() {
                    Some(b'+') => 1,
                    Some(b'-') => -1,
                    _ => return None,
                };
                let z = zone.as_bytes();
                if z.len() != 6 || z[3] != b':' {
                    return None;
                }
                let (zh, zm): (i64, i64) = (zone[1..3].parse().ok()?, zone[4..6].parse().ok()?);
                if zh > 23 || zm > 59 {
                    return None;
                }
                // 12:00+02:00 is 10:00 UTC.
                secs -= sign * (zh * 3600 + zm * 60);
            }
        }
    }
    let secs = u64::try_from(secs).ok()?;
    secs.checked_mul(NANOS_PER_SEC)?.checked_add(nanos as u64)
}

/// Reads a `since` as `docker logs --since` does: an RFC 3339 time, Unix seconds
/// (`1764012345`, `1764012345.5`), or a duration before `now` (`10m`, `1h30m`, `90s`).
pub fn parse_since(text: &str, now: Nanos) -> Result<Nanos, String> {
    let text = text.trim();
    let unix = !text.is_empty()
        && text.bytes().all(|c| c.is_ascii_digit() || c == b'.')
        && text.bytes().filter(|c| *c == b'.').count() <= 1
        && !text.starts_with('.');
    if unix {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let secs: u64 = whole.parse().map_err(|_| bad_since(text))?;
        let kept: String = fraction
            .chars()
            .chain("000000000".chars())
            .take(9)
            .collect();
        let nanos: u64 = kept.parse().map_err(|_| bad_since(text))?;
        return secs
            .checked_mul(NANOS_PER_SEC)
            .and_then(|n| n.checked_add(nanos))
            .ok_or_else(|| bad_since(text));
    }
    if let Some(time) = parse_rfc3339(text) {
        return Ok(time);
    }
    match crate::span::Span::parse(text) {
        Ok(span) => Ok(now.saturating_sub(span.millis().saturating_mul(1_000_000))),
        Err(_) => Err(bad_since(text)),
    }
}

fn bad_since(text: &str) -> String {
    format!(
        "since '{}' is not a time: give an RFC 3339 time (2026-11-24T19:25:45Z), Unix seconds \
         (1764012345) or a duration before now (10m, 1h30m)",
        text.escape_debug()
    )
}

/// Unix seconds with nanoseconds (`1764012345.000000001`): how the manager passes a
/// `since` it resolved on to the agents, exactly, in a form `parse_since` reads back.
pub fn unix_seconds(time: Nanos) -> String {
    format!("{}.{:09}", time / NANOS_PER_SEC, time % NANOS_PER_SEC)
}

/// A yes/no query parameter: `true`/`1`/empty (`?follow`) or `false`/`0`.
pub fn parse_flag(name: &str, text: &str) -> Result<bool, String> {
    match text.trim() {
        "" | "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        other => Err(format!(
            "{name} '{}' is not a yes or no: use true or false",
            other.escape_debug()
        )),
    }
}

/// `tail`: how many of the last lines of each replica; `all` (or nothing) for every line.
pub fn parse_tail(text: &str) -> Result<Option<u64>, String> {
    match text.trim() {
        "" | "all" => Ok(None),
        n => n.parse().map(Some).map_err(|_| {
            format!(
                "tail '{}' is not a number of lines: give a whole number, or all",
                n.escape_debug()
            )
        }),
    }
}

/// A logs request's options, read and checked: what `LogsQuery` asks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogRequest {
    pub follow: bool,
    pub tail: Option<u64>,
    pub since: Option<Nanos>,
    pub timestamps: bool,
}

impl LogRequest {
    /// Reads a query (`now` resolves a `since` given as a duration); the first bad value
    /// is the error, in words for people.
    pub fn read(query: &crate::wire::LogsQuery, now: Nanos) -> Result<LogRequest, String> {
        let flag = |name: &str, value: &Option<String>| match value {
            Some(text) => parse_flag(name, text),
            None => Ok(false),
        };
        Ok(LogRequest {
            follow: flag("follow", &query.follow)?,
            tail: match &query.tail {
                Some(text) => parse_tail(text)?,
                None => None,
            },
            since: query
                .since
                .as_deref()
                .map(|text| parse_since(text, now))
                .transpose()?,
            timestamps: flag("timestamps", &query.timestamps)?,
        })
    }

    /// The query that asks an agent for the same lines (`since` resolved, exactly).
    pub fn to_query(&self) -> crate::wire::LogsQuery {
        crate::wire::LogsQuery {
            follow: self.follow.then(|| "true".to_string()),
            tail: self.tail.map(|n| n.to_string()),
            since: self.since.map(unix_seconds),
            timestamps: None,
        }
    }
}

/// A task whose logs a service's logs show, and where they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogTask {
    pub task: String,
    pub slot: u32,
    pub worker: String,
}

/// The tasks whose logs `service`'s logs show, by slot: every task of a slot that is
/// starting or running (two during a start-first replacement); for a slot with none,
/// its latest task that ran (had a container) and ended — complete, failed or shut down,
/// not lost (its worker is gone) — whose worker may still keep its container (its agent
/// says if not). Tasks not started yet show once they start (a followed stream looks
/// again at every commit).
pub fn log_tasks(state: &crate::ClusterState, service: &str) -> Vec<LogTask> {
    use crate::TaskState::{Complete, Failed, Running, Shutdown, Starting};
    let mut live: std::collections::BTreeMap<u32, Vec<&crate::Task>> = Default::default();
    let mut ended: std::collections::BTreeMap<u32, &crate::Task> = Default::default();
    for task in state.tasks.values().filter(|t| t.service == service) {
        if task.worker.is_none() {
            continue;
        }
        match task.state {
            Starting | Running => live.entry(task.slot).or_default().push(task),
            Complete | Failed | Shutdown if task.container_id.is_some() => {
                let later = ended.get(&task.slot).is_none_or(|other| {
                    (task.updated_at, &task.id) > (other.updated_at, &other.id)
                });
                if later {
                    ended.insert(task.slot, task);
                }
            }
            _ => {}
        }
    }
    for (slot, task) in ended {
        live.entry(slot).or_insert_with(|| vec![task]);
    }
    live.into_values()
        .flatten()
        .map(|task| LogTask {
            task: task.id.clone(),
            slot: task.slot,
            worker: task.worker.clone().unwrap_or_default(),
        })
        .collect()
}

/// Which replica wrote a line, as every line of the merged stream starts:
/// `web.2@worker_1 | `.
pub fn prefix(service: &str, slot: u32, worker: &str) -> String {
    format!("{service}.{slot}@{worker} | ")
}

/// One line of the merged stream: its replica's prefix, its time when asked for, its
/// text, and the end of line.
pub fn render(prefix: &str, time: Option<Nanos>, text: &str) -> String {
    match time {
        Some(time) => format!("{prefix}{} {text}\n", rfc3339(time)),
        None => format!("{prefix}{text}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Nanos = 1_559_662_887_000_000_000;

    #[test]
    fn times_read_back_as_written() {
        assert_eq!(rfc3339(T + 5), "2019-06-04T15:41:27.000000005Z");
        assert_eq!(parse_rfc3339("2019-06-04T15:41:27.000000005Z"), Some(T + 5));
        assert_eq!(parse_rfc3339("2019-06-04T15:41:27Z"), Some(T));
        assert_eq!(parse_rfc3339("2019-06-04 15:41:27"), Some(T));
        assert_eq!(
            parse_rfc3339("2019-06-04T17:41:27.5+02:00"),
            Some(T + 500_000_000)
        );
        assert_eq!(parse_rfc3339("2019-06-04T14:41:27-01:00"), Some(T));
        assert_eq!(parse_rfc3339("1970-01-01"), Some(0));
        assert_eq!(
            rfc3339(951_782_400 * NANOS_PER_SEC),
            "2000-02-29T00:00:00.000000000Z"
        );
        for bad in [
            "",
            "2019-02-30",
            "2019-06-04T25:00:00Z",
            "2019-06-04T15:41:27+2",
            "yesterday",
            "2019-06-04T15:41:27.Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn since_takes_a_time_unix_seconds_or_a_duration() {
        let now = T + 3600 * NANOS_PER_SEC;
        assert_eq!(parse_since("2019-06-04T15:41:27Z", now), Ok(T));
        assert_eq!(parse_since("1559662887", now), Ok(T));
        assert_eq!(parse_since("1559662887.25", now), Ok(T + 250_000_000));
        assert_eq!(parse_since(&unix_seconds(T + 7), now), Ok(T + 7));
        assert_eq!(parse_since("1h", now), Ok(T));
        assert_eq!(parse_since("59m60s", now), Ok(T));
        assert!(parse_since("soon", now).is_err_and(|e| e.contains("RFC 3339")));
        assert!(parse_since("1.2.3", now).is_err());
    }

    fn task(id: &str, slot: u32, state: &str, container: bool, updated_at: u64) -> crate::Task {
        let doc = serde_json::json!({
            "id": id, "service": "web", "slot": slot, "spec_version": 1, "image": null,
            "worker": "w1", "desired": "running", "state": state, "message": "",
            "container_id": if container { Some("c") } else { None },
            "exit_code": null, "error": null, "created_at": 0, "updated_at": updated_at,
        });
        serde_json::from_value(doc).expect("a task")
    }

    #[test]
    fn a_slots_live_tasks_or_else_its_latest_that_ran() {
        let mut state = crate::ClusterState::default();
        for t in [
            task("a-running", 1, "running", true, 5),
            task("a-old", 1, "failed", true, 9),
            task("b-failed", 2, "failed", true, 3),
            task("b-later", 2, "shutdown", true, 4),
            task("b-never-ran", 2, "failed", false, 8),
            task("c-lost", 3, "lost", true, 8),
            task("c-pending", 3, "assigned", false, 9),
        ] {
            state.tasks.insert(t.id.clone(), std::sync::Arc::new(t));
        }
        let shown: Vec<(String, u32)> = log_tasks(&state, "web")
            .into_iter()
            .map(|t| (t.task, t.slot))
            .collect();
        assert_eq!(shown, [("a-running".into(), 1), ("b-later".into(), 2)]);
        assert!(log_tasks(&state, "other").is_empty());
    }

    #[test]
    fn flags_tails_and_lines() {
        assert_eq!(parse_flag("follow", ""), Ok(true));
        assert_eq!(parse_flag("follow", "0"), Ok(false));
        assert!(parse_flag("follow", "yes please").is_err());
        assert_eq!(parse_tail("10"), Ok(Some(10)));
        assert_eq!(parse_tail("all"), Ok(None));
        assert!(parse_tail("-1").is_err());
        let p = prefix("web", 2, "w1");
        assert_eq!(render(&p, None, "hello"), "web.2@w1 | hello\n");
        let query = crate::wire::LogsQuery {
            follow: Some(String::new()),
            tail: Some("5".into()),
            since: Some("10s".into()),
            timestamps: Some("false".into()),
        };
        let request = LogRequest::read(&query, T).expect("valid");
        assert_eq!(
            request,
            LogRequest {
                follow: true,
                tail: Some(5),
                since: Some(T - 10 * NANOS_PER_SEC),
                timestamps: false,
            }
        );
        assert_eq!(LogRequest::read(&request.to_query(), 0), Ok(request));
        assert_eq!(
            render(&p, Some(T), "hello"),
            "web.2@w1 | 2019-06-04T15:41:27.000000000Z hello\n"
        );
    }
}
