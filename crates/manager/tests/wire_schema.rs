//! The OpenAPI document and the wire types agree. Each type of `mycluster_core::wire` the
//! API carries is mapped (below, by hand) to the component of `openapi.json` that
//! documents it, and the JSON schema generated from the type (schemars, which follows the
//! serde attributes) is compared with that component: the same properties, the same
//! required ones, and for each property the same type, nullability, enum values, items
//! and map values, nested objects compared the same way. Descriptions, formats, bounds,
//! patterns and examples are the document's own. A field added to a type and not to the
//! document, or to the document and not to a type, fails here; so does a wire type that
//! is neither mapped nor listed as not served by the manager, and a component that no
//! type answers for.

use std::collections::{BTreeMap, BTreeSet};

use mycluster_core::wire::*;
use mycluster_manager::api::OPENAPI;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::Value;

/// The schema of what the manager writes: a field it skips when empty is optional.
fn answer<T: JsonSchema>() -> Value {
    generate::<T>(SchemaSettings::openapi3().for_serialize())
}

/// The schema of what the manager reads: a field with a default is optional.
fn request<T: JsonSchema>() -> Value {
    generate::<T>(SchemaSettings::openapi3().for_deserialize())
}

fn generate<T: JsonSchema>(settings: SchemaSettings) -> Value {
    // Nested types inline, so that each is compared where it is used.
    let settings = settings.with(|s| s.inline_subschemas = true);
    serde_json::to_value(settings.into_generator().into_root_schema_for::<T>())
        .expect("a schema is JSON")
}

/// Each wire type the manager's API carries, the component documenting it, and the
/// type's schema.
fn documented() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("ErrorDoc", "Error", answer::<ErrorDoc>()),
        // One type, two documented answers (200 and 503).
        ("HealthDoc", "Health", answer::<HealthDoc>()),
        ("HealthDoc", "HealthDegraded", answer::<HealthDoc>()),
        ("ReseedDoc", "ReseedDoc", answer::<ReseedDoc>()),
        ("JoinTokenDoc", "JoinTokenDoc", answer::<JoinTokenDoc>()),
        ("StateDoc", "StateDoc", answer::<StateDoc>()),
        (
            "WorkerInstances",
            "WorkerInstances",
            answer::<WorkerInstances>(),
        ),
        (
            "ServiceInstance",
            "ServiceInstance",
            answer::<ServiceInstance>(),
        ),
        ("StatsDoc", "StatsDoc", answer::<StatsDoc>()),
        ("ServiceRequest", "ServiceSpec", request::<ServiceRequest>()),
        (
            "ServicePatchRequest",
            "ServicePatch",
            request::<ServicePatchRequest>(),
        ),
        ("ServiceDoc", "ServiceDoc", answer::<ServiceDoc>()),
        ("TaskDoc", "TaskDoc", answer::<TaskDoc>()),
        ("AssignedTasks", "AssignedTasks", answer::<AssignedTasks>()),
        ("TaskReport", "TaskReport", request::<TaskReport>()),
        ("StatusReport", "StatusReport", request::<StatusReport>()),
        ("ReportDoc", "StatusReportResult", answer::<ReportDoc>()),
        ("WorkerDoc", "WorkerDoc", answer::<WorkerDoc>()),
        ("Registration", "Registration", request::<Registration>()),
        ("HeartbeatDoc", "Heartbeat", answer::<HeartbeatDoc>()),
        ("DownRequest", "DownManyRequest", request::<DownRequest>()),
        ("DownDoc", "DownResult", answer::<DownDoc>()),
        ("RelocationDoc", "Relocation", answer::<RelocationDoc>()),
        ("DownManyDoc", "DownManyResult", answer::<DownManyDoc>()),
        ("RolloutDoc", "RolloutDoc", answer::<RolloutDoc>()),
        ("VersionsDoc", "VersionsDoc", answer::<VersionsDoc>()),
        ("VersionDoc", "VersionDoc", answer::<VersionDoc>()),
        ("RouteTable", "RouteTable", answer::<RouteTable>()),
        ("Route", "Route", answer::<Route>()),
        ("Endpoint", "Endpoint", answer::<Endpoint>()),
        (
            "ServiceEndpoints",
            "ServiceEndpoints",
            answer::<ServiceEndpoints>(),
        ),
        ("PortSpec", "PortSpec", answer::<PortSpec>()),
        ("PortSpec", "PortSpecRequest", request::<PortSpec>()),
        ("TaskPort", "TaskPort", answer::<TaskPort>()),
        ("TaskPort", "TaskPortReport", request::<TaskPort>()),
        // A version's spec: the request body, as the manager writes it back.
        ("ServiceRequest", "VersionSpec", answer::<ServiceRequest>()),
        // As stored and shown (every field written), and as sent (defaults optional).
        ("HealthCheck", "HealthCheck", answer::<HealthCheck>()),
        (
            "HealthCheck",
            "HealthCheckRequest",
            request::<HealthCheck>(),
        ),
        ("UpdatePolicy", "UpdatePolicy", answer::<UpdatePolicy>()),
        (
            "UpdatePolicy",
            "UpdatePolicyRequest",
            request::<UpdatePolicy>(),
        ),
        // Issue 17: placement, resources, volumes, restart policy, drain and rebalance.
        ("Amount", "Amount", answer::<Amount>()),
        ("Amount", "AmountRequest", request::<Amount>()),
        ("Resources", "Resources", answer::<Resources>()),
        ("Resources", "ResourcesRequest", request::<Resources>()),
        ("VolumeSpec", "VolumeSpec", answer::<VolumeSpec>()),
        ("VolumeSpec", "VolumeSpecRequest", request::<VolumeSpec>()),
        ("RestartPolicy", "RestartPolicy", answer::<RestartPolicy>()),
        (
            "RestartPolicy",
            "RestartPolicyRequest",
            request::<RestartPolicy>(),
        ),
        ("Mount", "Mount", answer::<Mount>()),
        ("VolumeDoc", "VolumeDoc", answer::<VolumeDoc>()),
        ("LabelRequest", "LabelRequest", request::<LabelRequest>()),
        ("Suspicion", "Suspicion", answer::<Suspicion>()),
        ("RebalanceDoc", "RebalanceDoc", answer::<RebalanceDoc>()),
        ("MoveDoc", "MoveDoc", answer::<MoveDoc>()),
        // Issue 19: one line of the event stream.
        ("EventDoc", "EventDoc", answer::<EventDoc>()),
    ]
}

/// Names `wire` exports that have no component of their own, and why.
const NOT_COMPONENTS: &[(&str, &str)] = &[
    ("AgentHealthDoc", "an agent's endpoint, not the manager's"),
    (
        "LogLineDoc",
        "an agent's endpoint (its tasks' logs), not the manager's",
    ),
    (
        "LogSource",
        "an enum of an agent's endpoint (its tasks' logs)",
    ),
    (
        "LogsQuery",
        "query parameters, documented inline in serviceLogs",
    ),
    (
        "AssignedView",
        "writes AssignedTasks (core checks it reads back as one)",
    ),
    (
        "TaskView",
        "writes TaskDoc (core checks it reads back as one)",
    ),
    ("Ignored", "documented inline in StatusReportResult"),
    ("SkippedDoc", "documented inline in DownManyResult"),
    ("Driver", "an enum, checked where it is used"),
    ("SaidDriver", "an enum, checked where it is used"),
    ("HealthStatus", "an enum, checked where it is used"),
    ("DesiredState", "an enum, checked where it is used"),
    ("TaskState", "an enum, checked where it is used"),
    ("WorkerStatus", "an enum, checked where it is used"),
    ("Health", "an enum, checked where it is used"),
    ("RolloutKind", "an enum, checked where it is used"),
    ("RolloutState", "an enum, checked where it is used"),
    ("UpdateOrder", "an enum, checked where it is used"),
    ("FailureAction", "an enum, checked where it is used"),
    ("Protocol", "an enum, checked where it is used"),
    ("MountKind", "an enum, checked where it is used"),
    ("RestartCondition", "an enum, checked where it is used"),
    ("OnDisconnect", "an enum, checked where it is used"),
    ("SuspicionReason", "an enum, checked where it is used"),
    ("Constraint", "a string, checked where it is used"),
    ("Spread", "a string, checked where it is used"),
    (
        "Probe",
        "flattened into HealthCheck: its variants are HealthCheck's http, tcp and exec",
    ),
    (
        "Event",
        "flattened into EventDoc: its variants are EventDoc's branches",
    ),
    ("Topic", "an enum, checked where it is used"),
    ("format_uptime", "a function"),
];

/// Components no wire type answers for.
const NOT_TYPES: &[&str] = &["OpenApiDocument"];

/// Where a component says more than its type, on purpose.
#[derive(Clone, Copy, PartialEq)]
enum Leeway {
    /// It lists some of the type's enum values (or values of a type without any): the
    /// only ones this answer can carry.
    Narrower,
    /// It leaves out a property the type skips when empty: this answer never has it.
    Omitted,
    /// It requires a property the type may skip: this answer always has it.
    Required,
    /// It leaves optional a property the type requires: the manager's parser gives it
    /// a default that the serde type does not state.
    Defaulted,
}

const LEEWAY: &[(&str, &str, Leeway)] = &[
    ("Health", "status", Leeway::Narrower),
    ("Health", "message", Leeway::Omitted),
    ("Health", "code", Leeway::Omitted),
    ("HealthDegraded", "status", Leeway::Narrower),
    ("HealthDegraded", "code", Leeway::Narrower),
    ("HealthDegraded", "message", Leeway::Required),
    ("HealthDegraded", "code", Leeway::Required),
    ("DownResult", "status", Leeway::Narrower),
    // `healthcheck.http.path` defaults to "/" (`HealthCheck::from_json`).
    ("HealthCheckRequest", "path", Leeway::Defaulted),
];

fn leeway(component: &str, property: &str, kind: Leeway) -> bool {
    LEEWAY.contains(&(component, property, kind))
}

fn document() -> Value {
    serde_json::from_str(OPENAPI).expect("openapi.json is JSON")
}

/// A schema reduced to what the comparison looks at.
#[derive(Debug, Default)]
struct Shape {
    /// The component it was found in, for the leeway and the messages.
    component: String,
    ty: Option<String>,
    nullable: bool,
    values: Option<BTreeSet<String>>,
    items: Option<Box<Shape>>,
    properties: Option<BTreeMap<String, Shape>>,
    required: BTreeSet<String>,
    map_values: Option<Box<Shape>>,
}

/// Reduces `schema` (of the document when `doc` is given: its `$ref`s are followed).
fn shape(schema: &Value, doc: Option<&Value>, component: &str) -> Shape {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{component}: an unexpected $ref {reference}"));
        let doc = doc.expect("only the document has $refs (the types' are inlined)");
        let target = &doc["components"]["schemas"][name];
        assert!(target.is_object(), "{component}: $ref to a missing {name}");
        return shape(target, Some(doc), name);
    }
    if let Some([one]) = schema
        .get("allOf")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        let mut inner = shape(one, doc, component);
        inner.nullable |= schema["nullable"] == true;
        return inner;
    }
    // `Option<T>` of a T that schemars cannot mark nullable in place (an enum, an object
    // with a flattened enum): T or null.
    for branches in ["anyOf", "oneOf"] {
        if let Some([a, b]) = schema
            .get(branches)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            let is_null = |v: &Value| v["enum"] == serde_json::json!([null]);
            if let Some(other) = [(a, b), (b, a)]
                .into_iter()
                .find_map(|(x, y)| is_null(y).then_some(x))
            {
                let mut inner = shape(other, doc, component);
                inner.nullable = true;
                return inner;
            }
        }
    }
    let mut out = Shape {
        component: component.to_string(),
        nullable: schema["nullable"] == true,
        ..Shape::default()
    };
    match &schema["type"] {
        Value::String(ty) => out.ty = Some(ty.clone()),
        Value::Array(types) => {
            for ty in types.iter().filter_map(Value::as_str) {
                match ty {
                    "null" => out.nullable = true,
                    ty => out.ty = Some(ty.to_string()),
                }
            }
        }
        _ => {}
    }
    let mut values = BTreeSet::new();
    if let Some(listed) = schema.get("enum").and_then(Value::as_array) {
        values.extend(listed.iter().map(Value::to_string));
    }
    // An enum whose variants have their own descriptions: one branch per value. Other
    // branches are rules no serde type states (ServiceSpec's "an image or a command").
    for branches in ["oneOf", "anyOf"] {
        let branches = schema.get(branches).and_then(Value::as_array);
        let branches: Vec<Shape> = branches
            .into_iter()
            .flatten()
            .map(|branch| shape(branch, doc, component))
            .collect();
        if !branches.is_empty() && branches.iter().all(|b| b.values.is_some()) {
            for branch in branches {
                values.extend(branch.values.into_iter().flatten());
                out.ty = out.ty.or(branch.ty);
            }
        }
    }
    // A nullable enum lists null among its values (OpenAPI 3.0): that is nullability.
    if values.remove("null") {
        out.nullable = true;
    }
    if !values.is_empty() {
        out.values = Some(values);
    }
    if let Some(items) = schema.get("items") {
        out.items = Some(Box::new(shape(items, doc, component)));
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        out.properties = Some(
            properties
                .iter()
                .map(|(name, p)| (name.clone(), shape(p, doc, component)))
                .collect(),
        );
        out.required = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
    }
    // An enum flattened into a struct (serde's `flatten`, as HealthCheck's probe): one
    // branch per variant, each with its own property; for the struct, optional ones.
    for branches in ["oneOf", "anyOf"] {
        let branches: Vec<&Value> = schema
            .get(branches)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        if branches.is_empty() || !branches.iter().all(|b| b["properties"].is_object()) {
            continue;
        }
        let properties = out.properties.get_or_insert_with(BTreeMap::new);
        for branch in branches {
            for (name, p) in branch["properties"].as_object().into_iter().flatten() {
                if !properties.contains_key(name) {
                    properties.insert(name.clone(), shape(p, doc, component));
                }
            }
        }
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        out.map_values = Some(Box::new(shape(values, doc, component)));
    }
    out
}

/// What differs between a component (`doc`) and the type's schema, one line each.
fn compare(path: &str, doc: &Shape, ty: &Shape, property: &str, out: &mut Vec<String>) {
    let component = doc.component.as_str();
    if doc.ty != ty.ty {
        out.push(format!(
            "{path}: type {:?} in the wire type, {:?} in openapi.json",
            ty.ty, doc.ty
        ));
    }
    if doc.nullable != ty.nullable {
        out.push(format!(
            "{path}: {} in the wire type, {} in openapi.json",
            nullable(ty.nullable),
            nullable(doc.nullable)
        ));
    }
    if doc.values != ty.values {
        let narrower = match (&doc.values, &ty.values) {
            (Some(doc), Some(ty)) => doc.is_subset(ty),
            (Some(_), None) => true,
            _ => false,
        };
        if !(narrower && leeway(component, property, Leeway::Narrower)) {
            out.push(format!(
                "{path}: values {} in the wire type, {} in openapi.json",
                listed(&ty.values),
                listed(&doc.values)
            ));
        }
    }
    match (&doc.items, &ty.items) {
        (Some(d), Some(t)) => compare(&format!("{path}[]"), d, t, "", out),
        (None, None) => {}
        _ => out.push(format!("{path}: an array on one side only")),
    }
    match (&doc.map_values, &ty.map_values) {
        (Some(d), Some(t)) => compare(&format!("{path}{{}}"), d, t, "", out),
        (None, None) => {}
        _ => out.push(format!("{path}: a map on one side only")),
    }
    let (Some(doc_properties), Some(ty_properties)) = (&doc.properties, &ty.properties) else {
        if doc.properties.is_some() != ty.properties.is_some() {
            out.push(format!(
                "{path}: an object with properties on one side only"
            ));
        }
        return;
    };
    let names: BTreeSet<&String> = doc_properties.keys().chain(ty_properties.keys()).collect();
    for name in names {
        let at = format!("{path}.{name}");
        match (doc_properties.get(name), ty_properties.get(name)) {
            (Some(d), Some(t)) => {
                let doc_requires = doc.required.contains(name);
                let ty_requires = ty.required.contains(name);
                let leeway_required = doc_requires && leeway(component, name, Leeway::Required);
                let defaulted = ty_requires && leeway(component, name, Leeway::Defaulted);
                if doc_requires != ty_requires && !leeway_required && !defaulted {
                    out.push(format!(
                        "{at}: {} in the wire type, {} in openapi.json",
                        required(ty_requires),
                        required(doc_requires)
                    ));
                }
                compare(&at, d, t, name, out);
            }
            (None, Some(_)) if leeway(component, name, Leeway::Omitted) => {}
            (None, Some(_)) => out.push(format!("{at}: in the wire type, not in openapi.json")),
            (Some(_), None) => out.push(format!("{at}: in openapi.json, not in the wire type")),
            (None, None) => {}
        }
    }
}

fn nullable(yes: bool) -> &'static str {
    if yes {
        "nullable"
    } else {
        "not nullable"
    }
}

fn required(yes: bool) -> &'static str {
    if yes {
        "required"
    } else {
        "optional"
    }
}

fn listed(values: &Option<BTreeSet<String>>) -> String {
    match values {
        Some(values) => format!(
            "[{}]",
            values.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
        None => "any".into(),
    }
}

/// The names `crates/core/src/wire/mod.rs` exports (`pub use ...::{A, B};`).
fn exported() -> BTreeSet<String> {
    let source = include_str!("../../core/src/wire/mod.rs");
    let mut names = BTreeSet::new();
    for statement in source.split("pub use ").skip(1) {
        let statement = statement.split(';').next().unwrap_or("");
        let list = match statement.split_once('{') {
            Some((_, list)) => list.trim_end().trim_end_matches('}'),
            None => statement.rsplit("::").next().unwrap_or(""),
        };
        names.extend(
            list.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string),
        );
    }
    names
}

#[test]
fn every_wire_type_matches_its_openapi_component() {
    let doc = document();
    let mut differences = Vec::new();
    for (ty, component, schema) in documented() {
        let documented = &doc["components"]["schemas"][component];
        assert!(
            documented.is_object(),
            "{ty} is mapped to {component}, which openapi.json does not have"
        );
        let doc_shape = shape(documented, Some(&doc), component);
        let ty_shape = shape(&schema, None, component);
        compare(
            &format!("{ty} ({component})"),
            &doc_shape,
            &ty_shape,
            "",
            &mut differences,
        );
    }
    assert!(
        differences.is_empty(),
        "openapi.json and the wire types disagree:\n  {}",
        differences.join("\n  ")
    );
}

#[test]
fn every_wire_type_and_every_component_is_accounted_for() {
    let mapped: BTreeSet<&str> = documented().iter().map(|(ty, _, _)| *ty).collect();
    let components: BTreeSet<String> = documented()
        .into_iter()
        .map(|(_, component, _)| component.to_string())
        .collect();
    let exported = exported();
    assert!(exported.len() >= 20, "the export parser found {exported:?}");
    for name in &exported {
        assert!(
            mapped.contains(name.as_str()) || NOT_COMPONENTS.iter().any(|(n, _)| n == name),
            "wire::{name} is neither mapped to an OpenAPI component (`documented`) nor listed in NOT_COMPONENTS"
        );
    }
    for name in mapped.iter().chain(NOT_COMPONENTS.iter().map(|(n, _)| n)) {
        assert!(exported.contains(*name), "{name} is not exported by wire");
    }
    let doc = document();
    for name in doc["components"]["schemas"]
        .as_object()
        .expect("components")
        .keys()
    {
        assert!(
            components.contains(name) || NOT_TYPES.contains(&name.as_str()),
            "the OpenAPI component {name} is mapped to no wire type"
        );
    }
}
