//! A small JSON Schema checker for the schemas in `docs/json/*.schema.json` (draft 2020-12):
//! `type` (one or a list), `properties`, `required`, `additionalProperties` (boolean or a
//! schema), `items`, `enum`, `const`, `minimum`, `oneOf`, `anyOf`, and `$ref` to `#/$defs/NAME`.
//! The schemas use nothing else, so any standard validator reads them the same way; a keyword
//! this checker does not know is an error, so a schema cannot silently promise more than is
//! checked.

use serde_json::{Map, Value};

const KNOWN: &[&str] = &[
    "$schema",
    "$id",
    "$defs",
    "$ref",
    "$comment",
    "title",
    "description",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "minimum",
    "oneOf",
    "anyOf",
];

/// Every way `value` breaks `schema` (whose `$defs` are those of `root`), as
/// `path: what`; empty when it conforms.
pub fn violations(root: &Value, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check(root, root, value, "$", &mut out);
    out
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.is_u64() || v.is_i64(),
        _ => false,
    }
}

fn check(root: &Value, schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        if schema == &Value::Bool(false) {
            out.push(format!("{path}: not allowed"));
        }
        return;
    };
    for k in s.keys() {
        if !KNOWN.contains(&k.as_str()) {
            out.push(format!(
                "{path}: schema keyword `{k}` is not supported by the checker"
            ));
        }
    }
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        match r
            .strip_prefix("#/$defs/")
            .and_then(|n| root.get("$defs").and_then(|d| d.get(n)))
        {
            Some(target) => check(root, target, v, path, out),
            None => out.push(format!("{path}: unresolved $ref {r}")),
        }
    }
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(t, v),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| type_ok(t, v)),
            _ => false,
        };
        if !ok {
            out.push(format!("{path}: expected type {t}, found {v}"));
            return;
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            out.push(format!(
                "{path}: {v} is not one of {}",
                Value::Array(e.clone())
            ));
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            out.push(format!("{path}: {v} is not {c}"));
        }
    }
    if let (Some(m), Some(n)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if n < m {
            out.push(format!("{path}: {n} is below {m}"));
        }
    }
    for (kw, exactly_one) in [("oneOf", true), ("anyOf", false)] {
        if let Some(alts) = s.get(kw).and_then(Value::as_array) {
            let passing = alts
                .iter()
                .filter(|a| {
                    let mut o = Vec::new();
                    check(root, a, v, path, &mut o);
                    o.is_empty()
                })
                .count();
            if passing == 0 || (exactly_one && passing > 1) {
                out.push(format!("{path}: {passing} of the {kw} alternatives match"));
            }
        }
    }
    if let Some(obj) = v.as_object() {
        object(root, s, obj, path, out);
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            check(root, items, x, &format!("{path}[{i}]"), out);
        }
    }
}

fn object(
    root: &Value,
    s: &Map<String, Value>,
    obj: &Map<String, Value>,
    path: &str,
    out: &mut Vec<String>,
) {
    let props = s.get("properties").and_then(Value::as_object);
    if let Some(req) = s.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !obj.contains_key(r) {
                out.push(format!("{path}: required field `{r}` is missing"));
            }
        }
    }
    for (k, x) in obj {
        let p = format!("{path}.{k}");
        match props.and_then(|p| p.get(k)) {
            Some(sub) => check(root, sub, x, &p, out),
            None => match s.get("additionalProperties") {
                Some(Value::Bool(false)) => out.push(format!("{p}: not in the schema")),
                Some(sub @ Value::Object(_)) => check(root, sub, x, &p, out),
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_checker_catches_each_kind_of_violation() {
        let schema = json!({
            "$defs": {"gen": {"type": "integer", "minimum": 1}},
            "type": "object",
            "required": ["target", "generation"],
            "additionalProperties": false,
            "properties": {
                "target": {"type": "string"},
                "generation": {"$ref": "#/$defs/gen"},
                "mode": {"enum": ["full", "incremental"]},
                "disks": {"type": "array", "items": {"type": "object", "required": ["index"]}},
                "error": {"type": ["string", "null"]}
            }
        });
        let good = json!({"target": "vm:a", "generation": 2, "mode": "full",
                          "disks": [{"index": 0}], "error": null});
        assert!(
            violations(&schema, &good).is_empty(),
            "{:?}",
            violations(&schema, &good)
        );
        for (bad, why) in [
            (json!({"target": "vm:a"}), "required"),
            (json!({"target": 1, "generation": 1}), "expected type"),
            (json!({"target": "vm:a", "generation": 0}), "below"),
            (
                json!({"target": "vm:a", "generation": 1, "mode": "x"}),
                "not one of",
            ),
            (
                json!({"target": "vm:a", "generation": 1, "disks": [{}]}),
                "required",
            ),
            (
                json!({"target": "vm:a", "generation": 1, "extra": 1}),
                "not in the schema",
            ),
        ] {
            let v = violations(&schema, &bad);
            assert!(v.iter().any(|m| m.contains(why)), "{bad}: {v:?}");
        }
        let unknown = json!({"pattern": "x"});
        assert!(!violations(&unknown, &json!("a")).is_empty());
    }
}
