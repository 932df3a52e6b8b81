//! Checking a call's arguments against its method's JSON Schema before the call, naming the
//! argument at fault.
//!
//! The schemas come from the SDK (`centaur_tools/schema.py`), which writes a small part of
//! JSON Schema: `type` (one or a list), `enum`, `const`, `anyOf`/`oneOf`/`allOf`, `properties`,
//! `required`, `additionalProperties` (`false` or a schema), `items`, `prefixItems`,
//! `minItems`/`maxItems`, `uniqueItems`, and numbers' and strings' bounds. That part is checked
//! here; anything else (`format`, `pattern`, `$ref`) is left to the worker, which converts each
//! argument to its type hint and names the argument when it cannot. A general JSON Schema crate
//! would bring a regex engine, URL and e-mail parsers and their trees for keywords no tool
//! schema uses, and its messages do not name the argument the way a caller needs.

use serde_json::{Map, Value};

use super::ToolError;

/// Checks `arguments` against a method's `parameters` schema; the error names the first
/// argument at fault.
pub fn check(parameters: &Value, arguments: &Map<String, Value>) -> Result<(), ToolError> {
    let fail = |argument: &str, message: String| {
        Err(ToolError::InvalidArguments {
            argument: argument.to_owned(),
            message,
        })
    };
    let properties = parameters.get("properties").and_then(Value::as_object);
    if let Some(required) = parameters.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !arguments.contains_key(name) {
                return fail(name, "is required".into());
            }
        }
    }
    for (name, value) in arguments {
        let schema = properties.and_then(|p| p.get(name));
        let schema = match (schema, parameters.get("additionalProperties")) {
            (Some(schema), _) => schema,
            (None, Some(Value::Bool(false))) => {
                let known: Vec<&str> = properties
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                let known = if known.is_empty() {
                    "the method takes no arguments".to_owned()
                } else {
                    format!("the method takes {}", known.join(", "))
                };
                return fail(name, format!("unknown argument ({known})"));
            }
            (None, Some(schema @ Value::Object(_))) => schema,
            (None, _) => continue,
        };
        if let Err(problem) = validate(schema, value) {
            return fail(name, problem.describe());
        }
    }
    Ok(())
}

/// What is wrong with a value, and where inside it (`[2].name`).
#[derive(Debug)]
struct Problem {
    path: String,
    message: String,
}

impl Problem {
    fn new(message: impl Into<String>) -> Problem {
        Problem {
            path: String::new(),
            message: message.into(),
        }
    }

    fn at(mut self, step: &str) -> Problem {
        self.path.insert_str(0, step);
        self
    }

    fn describe(&self) -> String {
        if self.path.is_empty() {
            self.message.clone()
        } else {
            format!("at {}: {}", self.path, self.message)
        }
    }
}

/// Deeper values than this are refused rather than walked.
const MAX_DEPTH: usize = 64;

fn validate(schema: &Value, value: &Value) -> Result<(), Problem> {
    validate_at(schema, value, 0)
}

fn validate_at(schema: &Value, value: &Value, depth: usize) -> Result<(), Problem> {
    if depth > MAX_DEPTH {
        return Err(Problem::new("is nested too deeply"));
    }
    let schema = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return Err(Problem::new("is not allowed")),
        Value::Object(schema) => schema,
        Value::Null | Value::Number(_) | Value::String(_) | Value::Array(_) => return Ok(()),
    };
    if let Some(types) = schema.get("type") {
        let names: Vec<&str> = match types {
            Value::String(name) => vec![name.as_str()],
            Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::Object(_) => Vec::new(),
        };
        if !names.is_empty() && !names.iter().any(|name| is_type(value, name)) {
            return Err(Problem::new(format!(
                "must be {}, not {}",
                names
                    .iter()
                    .map(|n| article(n))
                    .collect::<Vec<_>>()
                    .join(" or "),
                article(type_name(value))
            )));
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.iter().any(|a| json_equal(a, value))
    {
        return Err(Problem::new(format!(
            "must be one of {}, not {value}",
            allowed
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if let Some(constant) = schema.get("const")
        && !json_equal(constant, value)
    {
        return Err(Problem::new(format!("must be {constant}, not {value}")));
    }
    if let Some(Value::Array(options)) = schema.get("anyOf").or_else(|| schema.get("oneOf")) {
        let mut first = None;
        let mut matched = false;
        for option in options {
            match validate_at(option, value, depth + 1) {
                Ok(()) => {
                    matched = true;
                    break;
                }
                Err(problem) => {
                    first.get_or_insert(problem);
                }
            }
        }
        if !matched {
            return Err(any_of_problem(options, value, first));
        }
    }
    if let Some(Value::Array(all)) = schema.get("allOf") {
        for part in all {
            validate_at(part, value, depth + 1)?;
        }
    }
    match value {
        Value::Object(object) => validate_object(schema, object, depth),
        Value::Array(items) => validate_array(schema, items, depth),
        Value::Number(number) => validate_number(schema, number),
        Value::String(text) => validate_string(schema, text),
        Value::Null | Value::Bool(_) => Ok(()),
    }
}

/// The problem when no option of an `anyOf` matched: the option of the value's own type says
/// best what is wrong inside it; otherwise the types the options take.
fn any_of_problem(options: &[Value], value: &Value, first: Option<Problem>) -> Problem {
    let own_type = options.iter().find(|option| {
        option
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| is_type(value, t))
    });
    if let Some(option) = own_type
        && let Err(problem) = validate(option, value)
    {
        return problem;
    }
    let types: Vec<&str> = options
        .iter()
        .filter_map(|o| o.get("type").and_then(Value::as_str))
        .collect();
    if types.len() == options.len() && !types.is_empty() {
        return Problem::new(format!(
            "must be {}, not {}",
            types
                .iter()
                .map(|n| article(n))
                .collect::<Vec<_>>()
                .join(" or "),
            article(type_name(value))
        ));
    }
    first.unwrap_or_else(|| Problem::new("matches none of the types the method takes"))
}

fn validate_object(
    schema: &Map<String, Value>,
    object: &Map<String, Value>,
    depth: usize,
) -> Result<(), Problem> {
    let properties = schema.get("properties").and_then(Value::as_object);
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !object.contains_key(name) {
                return Err(Problem::new(format!("the key {name:?} is required")));
            }
        }
    }
    for (key, item) in object {
        let step = format!(".{key}");
        match (
            properties.and_then(|p| p.get(key)),
            schema.get("additionalProperties"),
        ) {
            (Some(property), _) => {
                validate_at(property, item, depth + 1).map_err(|p| p.at(&step))?;
            }
            (None, Some(Value::Bool(false))) => {
                return Err(Problem::new(format!("has an unknown key {key:?}")));
            }
            (None, Some(additional @ Value::Object(_))) => {
                validate_at(additional, item, depth + 1).map_err(|p| p.at(&step))?;
            }
            (None, _) => {}
        }
    }
    Ok(())
}

fn validate_array(
    schema: &Map<String, Value>,
    items: &[Value],
    depth: usize,
) -> Result<(), Problem> {
    let count = |key: &str| schema.get(key).and_then(Value::as_u64);
    if let Some(min) = count("minItems")
        && (items.len() as u64) < min
    {
        return Err(Problem::new(format!(
            "must have at least {min} items, not {}",
            items.len()
        )));
    }
    if let Some(max) = count("maxItems")
        && (items.len() as u64) > max
    {
        return Err(Problem::new(format!(
            "must have at most {max} items, not {}",
            items.len()
        )));
    }
    let prefix = schema
        .get("prefixItems")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (index, item) in items.iter().enumerate() {
        let item_schema = match prefix.get(index) {
            Some(schema) => Some(schema),
            None => schema.get("items"),
        };
        if let Some(item_schema) = item_schema {
            validate_at(item_schema, item, depth + 1).map_err(|p| p.at(&format!("[{index}]")))?;
        }
    }
    if schema.get("uniqueItems") == Some(&Value::Bool(true)) {
        for (index, item) in items.iter().enumerate() {
            if items[..index]
                .iter()
                .any(|earlier| json_equal(earlier, item))
            {
                return Err(Problem::new(format!(
                    "has {item} twice; its items must be unique"
                )));
            }
        }
    }
    Ok(())
}

fn validate_number(
    schema: &Map<String, Value>,
    number: &serde_json::Number,
) -> Result<(), Problem> {
    let Some(value) = number.as_f64() else {
        return Ok(());
    };
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    if let Some(min) = bound("minimum")
        && value < min
    {
        return Err(Problem::new(format!(
            "must be at least {min}, not {number}"
        )));
    }
    if let Some(max) = bound("maximum")
        && value > max
    {
        return Err(Problem::new(format!("must be at most {max}, not {number}")));
    }
    if let Some(min) = bound("exclusiveMinimum")
        && value <= min
    {
        return Err(Problem::new(format!(
            "must be more than {min}, not {number}"
        )));
    }
    if let Some(max) = bound("exclusiveMaximum")
        && value >= max
    {
        return Err(Problem::new(format!(
            "must be less than {max}, not {number}"
        )));
    }
    Ok(())
}

fn validate_string(schema: &Map<String, Value>, text: &str) -> Result<(), Problem> {
    let length = text.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && length < min
    {
        return Err(Problem::new(format!(
            "must be at least {min} characters long"
        )));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && length > max
    {
        return Err(Problem::new(format!(
            "must be at most {max} characters long"
        )));
    }
    Ok(())
}

/// Whether `value` is of JSON Schema type `name` (an integer is also a number; a number with
/// no fraction, `2.0`, is also an integer).
fn is_type(value: &Value, name: &str) -> bool {
    match (name, value) {
        ("null", Value::Null)
        | ("boolean", Value::Bool(_))
        | ("string", Value::String(_))
        | ("array", Value::Array(_))
        | ("object", Value::Object(_))
        | ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn article(type_name: &str) -> String {
    match type_name {
        "null" => "null".into(),
        "integer" | "array" | "object" => format!("an {type_name}"),
        other => format!("a {other}"),
    }
}

/// JSON equality where `1` and `1.0` are the same number.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests stop at the first surprise

    use serde_json::json;

    use super::*;

    fn parameters() -> Value {
        json!({
            "type": "object",
            "properties": {
                "repo": {"type": "string", "description": "owner/name"},
                "limit": {"type": "integer", "default": 10, "minimum": 1},
                "state": {"enum": ["open", "closed"]},
                "labels": {"type": "array", "items": {"type": "string"}},
                "since": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
                "filter": {
                    "type": "object",
                    "properties": {"author": {"type": "string"}, "draft": {"type": "boolean"}},
                    "required": ["author"],
                    "additionalProperties": false
                },
                "pairs": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}],
                          "minItems": 2, "maxItems": 2},
                "extra": {"type": "object", "additionalProperties": {"type": "integer"}}
            },
            "required": ["repo"],
            "additionalProperties": false
        })
    }

    fn fault(arguments: Value) -> (String, String) {
        match check(&parameters(), arguments.as_object().unwrap()) {
            Err(ToolError::InvalidArguments { argument, message }) => (argument, message),
            other => panic!("expected invalid arguments, got {other:?}"),
        }
    }

    #[test]
    fn good_arguments_pass() {
        let good = json!({
            "repo": "a/b", "limit": 3, "state": "open", "labels": ["x"], "since": null,
            "filter": {"author": "ann"}, "pairs": ["a", 1.5], "extra": {"k": 2}
        });
        check(&parameters(), good.as_object().unwrap()).unwrap();
        check(
            &parameters(),
            json!({"repo": "a/b", "since": "2024-01-01T00:00:00Z", "limit": 2.0})
                .as_object()
                .unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn faults_name_the_argument() {
        assert_eq!(fault(json!({})), ("repo".into(), "is required".into()));
        let (argument, message) = fault(json!({"repo": 5}));
        assert_eq!(argument, "repo");
        assert_eq!(message, "must be a string, not an integer");
        let (argument, message) = fault(json!({"repo": "a", "limt": 5}));
        assert_eq!(argument, "limt");
        assert!(message.starts_with("unknown argument"), "{message}");
        assert!(message.contains("limit"), "{message}");
        assert_eq!(fault(json!({"repo": "a", "limit": 1.5})).0, "limit");
        assert_eq!(fault(json!({"repo": "a", "limit": 0})).0, "limit");
        let (argument, message) = fault(json!({"repo": "a", "state": "merged"}));
        assert_eq!(argument, "state");
        assert!(message.contains("\"open\""), "{message}");
        let (argument, message) = fault(json!({"repo": "a", "labels": ["x", 2]}));
        assert_eq!(argument, "labels");
        assert_eq!(message, "at [1]: must be a string, not an integer");
        let (_, message) = fault(json!({"repo": "a", "since": 5}));
        assert_eq!(message, "must be a string or null, not an integer");
        let (_, message) = fault(json!({"repo": "a", "filter": {}}));
        assert!(message.contains("\"author\" is required"), "{message}");
        let (_, message) = fault(json!({"repo": "a", "filter": {"author": "x", "draft": "no"}}));
        assert_eq!(message, "at .draft: must be a boolean, not a string");
        let (_, message) = fault(json!({"repo": "a", "filter": {"author": "x", "z": 1}}));
        assert!(message.contains("unknown key \"z\""), "{message}");
        assert_eq!(fault(json!({"repo": "a", "pairs": ["a"]})).0, "pairs");
        let (_, message) = fault(json!({"repo": "a", "pairs": ["a", "b"]}));
        assert_eq!(message, "at [1]: must be a number, not a string");
        let (_, message) = fault(json!({"repo": "a", "extra": {"k": "v"}}));
        assert_eq!(message, "at .k: must be an integer, not a string");
    }

    #[test]
    fn the_error_message_begins_with_the_argument() {
        let error = check(&parameters(), json!({"repo": 1}).as_object().unwrap()).unwrap_err();
        assert!(
            error.to_string().starts_with("argument \"repo\": "),
            "{error}"
        );
    }
}
