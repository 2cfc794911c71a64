//! The field-by-field reading of request bodies that every part of a service's spec
//! shares: an object with only known fields (and the nearest known one named for a
//! typo), required and optional fields, and the parsers of the plain fields (strings,
//! images, commands, env, booleans, durations, replicas), each refusal naming the field.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::health::span_field;
use super::{Limits, SpecError, DEFAULT_STOP_GRACE_PERIOD};
use crate::image::validate_image;
use crate::span::Span;

pub(crate) fn as_object<'a>(
    body: &'a Value,
    allowed: &[&str],
) -> Result<&'a Map<String, Value>, SpecError> {
    let object = body
        .as_object()
        .ok_or_else(|| SpecError::NotAnObject(type_name(body)))?;
    unknown_field(object, "", allowed)?;
    Ok(object)
}

/// The object a nested field (`healthcheck`, `update.…`) holds, with only `allowed` keys.
pub(crate) fn check_fields<'a>(
    field: &str,
    value: &'a Value,
    allowed: &[&str],
) -> Result<&'a Map<String, Value>, SpecError> {
    let object = value.as_object().ok_or_else(|| SpecError::Invalid {
        field: field.to_string(),
        why: format!("must be an object, got {}", describe(value)),
    })?;
    unknown_field(object, &format!("{field}."), allowed)?;
    Ok(object)
}

pub(crate) fn unknown_field(
    object: &Map<String, Value>,
    prefix: &str,
    allowed: &[&str],
) -> Result<(), SpecError> {
    if let Some(field) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
        let hint = allowed
            .iter()
            .map(|known| (edit_distance(field, known), known))
            .filter(|(distance, _)| *distance <= 2)
            .min_by_key(|(distance, _)| *distance)
            .map(|(_, known)| known)
            .map(|known| format!(" (did you mean '{known}'?)"))
            .unwrap_or_default();
        return Err(SpecError::UnknownField {
            field: format!("{prefix}{}", field.escape_debug()),
            hint,
            allowed: allowed
                .iter()
                .map(|f| format!("'{f}'"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(())
}

pub(crate) fn required<T>(
    object: &Map<String, Value>,
    field: &'static str,
    parse: impl Fn(&'static str, &Value) -> Result<T, SpecError>,
) -> Result<T, SpecError> {
    match object.get(field) {
        None | Some(Value::Null) => Err(SpecError::MissingField(field)),
        Some(value) => parse(field, value),
    }
}

pub(crate) fn optional<T>(
    object: &Map<String, Value>,
    field: &'static str,
    parse: impl Fn(&'static str, &Value) -> Result<T, SpecError>,
) -> Result<Option<T>, SpecError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => parse(field, value).map(Some),
    }
}

pub(crate) fn field_string(field: &'static str, value: &Value) -> Result<String, SpecError> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| SpecError::WrongType {
            field,
            expected: "a string",
            got: describe(value),
        })
}

pub(crate) fn field_bool(field: &'static str, value: &Value) -> Result<bool, SpecError> {
    value.as_bool().ok_or_else(|| SpecError::WrongType {
        field,
        expected: "true or false",
        got: describe(value),
    })
}

/// `stop_grace_period`: a duration (`"10s"`, `"1m"`, or a number of seconds).
pub(crate) fn field_grace(field: &'static str, value: &Value) -> Result<Span, SpecError> {
    let object = Map::from_iter([(field.to_string(), value.clone())]);
    span_field(&object, field, field, DEFAULT_STOP_GRACE_PERIOD)
}

pub(crate) fn field_image(field: &'static str, value: &Value) -> Result<String, SpecError> {
    let image = field_string(field, value)?;
    validate_image(&image).map_err(SpecError::InvalidImage)?;
    Ok(image)
}

/// A command is argv: a non-empty list of strings, as Docker's exec form.
pub(crate) fn field_command(field: &'static str, value: &Value) -> Result<Vec<String>, SpecError> {
    let Value::Array(items) = value else {
        return Err(SpecError::WrongType {
            field,
            expected: "a list of strings (e.g. [\"sleep\", \"60\"])",
            got: describe(value),
        });
    };
    if items.is_empty() || items.len() > 256 {
        return Err(SpecError::InvalidCommand(
            "must hold 1 to 256 strings".into(),
        ));
    }
    let mut command = Vec::with_capacity(items.len());
    let mut total = 0;
    for (i, item) in items.iter().enumerate() {
        let Some(arg) = item.as_str() else {
            return Err(SpecError::InvalidCommand(format!(
                "item {i} must be a string, got {}",
                describe(item)
            )));
        };
        if arg.contains('\0') || (i == 0 && arg.is_empty()) {
            return Err(SpecError::InvalidCommand(format!(
                "item {i} must not be empty or contain NUL"
            )));
        }
        total += arg.len();
        command.push(arg.to_string());
    }
    if total > 64 * 1024 {
        return Err(SpecError::InvalidCommand("is longer than 64 KiB".into()));
    }
    Ok(command)
}

/// Environment variables: an object of names (as a shell accepts them) to strings.
pub(crate) fn field_env(
    field: &'static str,
    value: &Value,
) -> Result<BTreeMap<String, String>, SpecError> {
    let Value::Object(vars) = value else {
        return Err(SpecError::WrongType {
            field,
            expected: "an object of strings (e.g. {\"PORT\": \"8000\"})",
            got: describe(value),
        });
    };
    if vars.len() > 256 {
        return Err(SpecError::InvalidEnv(
            "must hold at most 256 variables".into(),
        ));
    }
    let mut env = BTreeMap::new();
    for (name, value) in vars {
        let valid_name = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && name.len() <= 256
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            return Err(SpecError::InvalidEnv(format!(
                "variable name '{}' must be letters, digits and '_', not starting with a digit",
                name.escape_debug()
            )));
        }
        let Some(text) = value.as_str() else {
            return Err(SpecError::InvalidEnv(format!(
                "variable '{name}' must be a string, got {}",
                describe(value)
            )));
        };
        if text.contains('\0') || text.len() > 32 * 1024 {
            return Err(SpecError::InvalidEnv(format!(
                "variable '{name}' must be under 32 KiB and contain no NUL"
            )));
        }
        env.insert(name.clone(), text.to_string());
    }
    Ok(env)
}

pub(crate) fn field_replicas(
    field: &'static str,
    value: &Value,
    limits: &Limits,
) -> Result<u32, SpecError> {
    let Value::Number(number) = value else {
        return Err(SpecError::WrongType {
            field,
            expected: "an integer",
            got: describe(value),
        });
    };
    let out_of_range = || SpecError::ReplicasOutOfRange {
        got: number.to_string(),
        max: limits.max_replicas,
    };
    match (number.as_u64(), number.as_i64()) {
        (Some(n), _) if n <= u64::from(limits.max_replicas) => Ok(n as u32),
        (Some(_), _) | (None, Some(_)) => Err(out_of_range()),
        // A float: 3.0 is still not an integer in a JSON API.
        (None, None) => Err(SpecError::WrongType {
            field,
            expected: "an integer",
            got: format!("the number {number}"),
        }),
    }
}

pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => {
            let shown: String = s.chars().take(40).collect();
            format!("the string {shown:?}")
        }
        Value::Number(n) => format!("the number {n}"),
        other => type_name(other).to_string(),
    }
}

/// Levenshtein distance, for "did you mean" hints on short field names.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}
