//! `centaur tools list|show|call`: the server's tools for people. `list` is a table (a broken
//! tool's reason under its row), `show` one tool with each method's parameters read from its
//! JSON Schema, `call` a method's result as JSON. Everything the server says (names,
//! descriptions, reasons, a method's error) is cleaned before it is printed; `--json` and the
//! result are JSON with every control character escaped.

use std::io::Read;
use std::process::ExitCode;

use centaur_client::Client;
use centaur_client::render::clip;
use centaur_client::sanitize::{Colours, clean, json_line, json_pretty};
use centaur_protocol::ErrorCode;
use centaur_protocol::tools::{MethodInfo, ToolInfo, ToolList, ToolStatus};
use serde_json::Value;

use super::threads::{padded, terminal_width};
use crate::error::CliError;

pub async fn list(client: &Client, json: bool) -> Result<ExitCode, CliError> {
    let list = client.tools().await?;
    if json {
        println!("{}", json_line(&list).expect("serializable"));
    } else {
        print!("{}", table(&list, terminal_width()));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn show(client: &Client, tool: &str, json: bool) -> Result<ExitCode, CliError> {
    let info = client.tool(tool).await?;
    if json {
        println!("{}", json_line(&info).expect("serializable"));
    } else {
        print!("{}", details(&info));
    }
    Ok(ExitCode::SUCCESS)
}

/// Calls the method with `arguments` as given on the command line (a JSON object, `-` for
/// stdin, `@FILE`, or nothing for `{}`) and prints its result.
pub async fn call(
    client: &Client,
    tool: &str,
    method: &str,
    arguments: Option<&str>,
    raw: bool,
) -> Result<ExitCode, CliError> {
    let arguments = read_arguments(arguments, &mut std::io::stdin().lock())?;
    let answer = match client.call_tool(tool, method, &arguments).await {
        Ok(answer) => answer,
        // The server names the argument: the caller's mistake, like a usage error.
        Err(failure) if failure.is_api(ErrorCode::InvalidArguments) => {
            return Err(CliError::ToolArguments(failure));
        }
        Err(failure) => return Err(failure.into()),
    };
    let printed = if raw {
        json_line(&answer.result)
    } else {
        json_pretty(&answer.result)
    };
    println!("{}", printed.expect("a JSON value serializes"));
    Ok(ExitCode::SUCCESS)
}

/// Why the arguments on the command line are not a call's arguments (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ArgumentsError {
    #[error("cannot read the arguments from {from}: {source}")]
    Read {
        from: String,
        source: std::io::Error,
    },
    #[error("the arguments from {from} are not JSON: {source}")]
    NotJson {
        from: String,
        source: serde_json::Error,
    },
    #[error(
        "the arguments from {from} are a JSON {found}, not an object: give them by name, e.g. '{{\"repo\": \"acme/api\"}}'"
    )]
    NotAnObject { from: String, found: &'static str },
}

/// The arguments object: `raw` itself, stdin for `-`, a file for `@FILE`, `{}` without one.
fn read_arguments(raw: Option<&str>, stdin: &mut impl Read) -> Result<Value, ArgumentsError> {
    let (from, text) = match raw {
        None => return Ok(Value::Object(serde_json::Map::new())),
        Some("-") => {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|source| ArgumentsError::Read {
                    from: "stdin".into(),
                    source,
                })?;
            ("stdin".to_owned(), text)
        }
        Some(raw) => match raw.strip_prefix('@') {
            Some(path) => {
                let from = path.to_owned();
                let text =
                    std::fs::read_to_string(path).map_err(|source| ArgumentsError::Read {
                        from: from.clone(),
                        source,
                    })?;
                (from, text)
            }
            None => ("the command line".to_owned(), raw.to_owned()),
        },
    };
    let value: Value = serde_json::from_str(&text).map_err(|source| ArgumentsError::NotJson {
        from: from.clone(),
        source,
    })?;
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Err(ArgumentsError::NotAnObject {
            from,
            found: "null",
        }),
        Value::Bool(_) => Err(ArgumentsError::NotAnObject {
            from,
            found: "boolean",
        }),
        Value::Number(_) => Err(ArgumentsError::NotAnObject {
            from,
            found: "number",
        }),
        Value::String(_) => Err(ArgumentsError::NotAnObject {
            from,
            found: "string",
        }),
        Value::Array(_) => Err(ArgumentsError::NotAnObject {
            from,
            found: "array",
        }),
    }
}

/// Server text on one line, safe to print.
fn one_line(text: &str) -> String {
    clean(text, Colours::Drop)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

const HEADER: [&str; 4] = ["NAME", "STATUS", "METHODS", "DESCRIPTION"];

/// The tools under a header; a description is cut to fit `width` when it is known, and a
/// broken tool's reason follows on its own line, whole.
fn table(list: &ToolList, width: Option<usize>) -> String {
    if list.tools.is_empty() {
        return "no tools: the server's TOOL_DIRS holds none (docs/tools.md)\n".to_owned();
    }
    let rows: Vec<[String; 4]> = list
        .tools
        .iter()
        .map(|tool| {
            let methods = match tool.status {
                ToolStatus::Ready => tool.methods.len().to_string(),
                ToolStatus::Loading | ToolStatus::Broken => "-".to_owned(),
            };
            [
                one_line(&tool.name),
                tool.status.as_str().to_owned(),
                methods,
                one_line(&tool.description),
            ]
        })
        .collect();
    let widest = |at: usize| {
        rows.iter()
            .map(|row| unicode_width::UnicodeWidthStr::width(row[at].as_str()))
            .chain([HEADER[at].len()])
            .max()
            .unwrap_or(0)
    };
    let (name, status, methods) = (widest(0), widest(1), widest(2));
    let description = width.map(|w| w.saturating_sub(name + status + methods + 3 * 2).max(10));
    let line = |cells: [&str; 4]| {
        let text = match description {
            Some(at_most) => clip(cells[3], at_most),
            None => cells[3].to_owned(),
        };
        let line = format!(
            "{}  {}  {}  {}",
            padded(cells[0], name),
            padded(cells[1], status),
            padded(cells[2], methods),
            text
        );
        format!("{}\n", line.trim_end())
    };
    let mut out = line(HEADER);
    for (row, tool) in rows.iter().zip(&list.tools) {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3]]));
        if let Some(error) = &tool.error {
            out.push_str(&format!("  └ {}\n", one_line(error)));
        }
    }
    out
}

/// One tool for people: what it is, where it comes from, what it may reach, and its methods.
fn details(tool: &ToolInfo) -> String {
    let mut out = format!("{} ({})\n", one_line(&tool.name), tool.status.as_str());
    for line in clean(&tool.description, Colours::Drop).lines() {
        out.push_str(&format!("  {}\n", line.trim_end()));
    }
    if let Some(error) = &tool.error {
        out.push_str(&format!("error    {}\n", one_line(error)));
    }
    out.push_str(&format!("source   {}\n", one_line(&tool.source)));
    for shadowed in &tool.shadows {
        out.push_str(&format!("shadows  {}\n", one_line(shadowed)));
    }
    let list = |items: &[String]| {
        if items.is_empty() {
            "(none)".to_owned()
        } else {
            items
                .iter()
                .map(|i| one_line(i))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    out.push_str(&format!("hosts    {}\n", list(&tool.hosts)));
    out.push_str(&format!("secrets  {}\n", list(&tool.secrets)));
    match tool.status {
        ToolStatus::Ready if tool.methods.is_empty() => out.push_str("\nno methods\n"),
        ToolStatus::Ready => {}
        ToolStatus::Loading => {
            out.push_str("\nits methods are being read: ask again in a moment\n");
        }
        ToolStatus::Broken => {}
    }
    for method in &tool.methods {
        out.push('\n');
        out.push_str(&method_details(method));
    }
    out
}

/// A method's signature line, its description, and a row per parameter.
fn method_details(method: &MethodInfo) -> String {
    let parameters = Parameter::all(&method.parameters);
    let signature: Vec<String> = parameters
        .iter()
        .map(|p| match (&p.default, p.required) {
            (Some(default), _) => format!("{}={default}", p.name),
            (None, true) => p.name.clone(),
            (None, false) => format!("{}?", p.name),
        })
        .collect();
    let mut out = format!("{}({})", one_line(&method.name), signature.join(", "));
    if let Some(returns) = &method.returns {
        out.push_str(&format!(" -> {}", type_of(returns)));
    }
    if method.approval {
        out.push_str("  [needs approval]");
    }
    out.push('\n');
    for line in clean(&method.description, Colours::Drop).lines() {
        out.push_str(format!("    {}", line.trim_end()).trim_end());
        out.push('\n');
    }
    if parameters.is_empty() {
        return out;
    }
    let widest = |cell: fn(&Parameter) -> String| {
        parameters
            .iter()
            .map(|p| unicode_width::UnicodeWidthStr::width(cell(p).as_str()))
            .max()
            .unwrap_or(0)
    };
    let name = widest(|p| p.name.clone());
    let kind = widest(|p| p.kind.clone());
    let need = widest(Parameter::need);
    for p in &parameters {
        let line = format!(
            "    {}  {}  {}  {}",
            padded(&p.name, name),
            padded(&p.kind, kind),
            padded(&p.need(), need),
            p.description
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One property of a method's parameters schema, as `show` prints it (already cleaned).
#[derive(Debug, PartialEq)]
struct Parameter {
    name: String,
    kind: String,
    required: bool,
    /// The default, as compact JSON.
    default: Option<String>,
    description: String,
}

impl Parameter {
    /// The properties of `schema`: the required ones in `required`'s order (the signature's),
    /// then the others by name (an object's order does not survive parsing).
    fn all(schema: &Value) -> Vec<Parameter> {
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let Some(properties) = schema["properties"].as_object() else {
            return Vec::new();
        };
        let mut ordered: Vec<(&String, &Value)> = required
            .iter()
            .filter_map(|name| properties.get_key_value(*name))
            .collect();
        ordered.extend(
            properties
                .iter()
                .filter(|(name, _)| !required.contains(&name.as_str())),
        );
        ordered
            .into_iter()
            .map(|(name, property)| Parameter {
                name: one_line(name),
                kind: type_of(property),
                required: required.contains(&name.as_str()),
                default: property
                    .get("default")
                    .map(|d| one_line(&json_line(d).expect("a JSON value serializes"))),
                description: one_line(property["description"].as_str().unwrap_or_default()),
            })
            .collect()
    }

    fn need(&self) -> String {
        match (&self.default, self.required) {
            (Some(default), _) => format!("default {default}"),
            (None, true) => "required".to_owned(),
            (None, false) => "optional".to_owned(),
        }
    }
}

/// A JSON Schema's type in a few words: `string`, `integer | null`, `array of string`,
/// `"open" | "closed"`, `object`; `any` when it says nothing.
fn type_of(schema: &Value) -> String {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(|v| one_line(&json_line(v).expect("a JSON value serializes")))
            .collect::<Vec<_>>()
            .join(" | ");
    }
    if let Some(value) = schema.get("const") {
        return one_line(&json_line(value).expect("a JSON value serializes"));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            return options.iter().map(type_of).collect::<Vec<_>>().join(" | ");
        }
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        return one_line(reference.rsplit('/').next().unwrap_or(reference));
    }
    let one = |kind: &str| match (kind, schema.get("items")) {
        ("array", Some(items)) => format!("array of {}", type_of(items)),
        (kind, _) => one_line(kind),
    };
    match schema.get("type") {
        Some(Value::String(kind)) => one(kind),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .map(one)
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tool(name: &str, status: ToolStatus, methods: Vec<MethodInfo>) -> ToolInfo {
        ToolInfo {
            name: name.into(),
            description: format!("the {name} tool"),
            status,
            error: None,
            source: format!("/srv/tools/{name}"),
            shadows: Vec::new(),
            hosts: Vec::new(),
            secrets: Vec::new(),
            methods,
        }
    }

    fn search() -> MethodInfo {
        MethodInfo {
            name: "search_issues".into(),
            description: "Search issues and pull requests.\n\nUses GitHub's search syntax.".into(),
            parameters: json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "query": {"type": "string", "description": "What to look for."},
                    "repo": {"type": ["string", "null"], "description": "owner/name"},
                    "state": {"enum": ["open", "closed"], "default": "open"},
                    "labels": {"type": "array", "items": {"type": "string"}},
                    "limit": {"type": "integer", "default": 20, "description": "At most this many."}
                },
                "required": ["query"]
            }),
            returns: Some(json!({"type": "array", "items": {"type": "object"}})),
            approval: false,
        }
    }

    fn post() -> MethodInfo {
        MethodInfo {
            name: "post_message".into(),
            description: "Post to a channel.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "channel": {"type": "string"},
                    "text": {"type": "string"}
                },
                "required": ["channel", "text"]
            }),
            returns: None,
            approval: true,
        }
    }

    /// A header; ready tools count their methods; a broken one says why on the next line; a
    /// loading one has no count yet.
    #[test]
    fn the_list_is_a_table_with_broken_tools_explained() {
        let mut broken = tool("postgres", ToolStatus::Broken, Vec::new());
        broken.error = Some(
            "client.py: ModuleNotFoundError: No module named 'psycopg': add it to [project].dependencies".into(),
        );
        let list = ToolList {
            tools: vec![
                tool("github", ToolStatus::Ready, vec![search(), post()]),
                tool("http", ToolStatus::Loading, Vec::new()),
                broken,
            ],
        };
        assert_eq!(
            table(&list, None),
            "\
NAME      STATUS   METHODS  DESCRIPTION
github    ready    2        the github tool
http      loading  -        the http tool
postgres  broken   -        the postgres tool
  └ client.py: ModuleNotFoundError: No module named 'psycopg': add it to [project].dependencies
"
        );
        // A narrow terminal cuts descriptions, never the reason.
        let mut long = tool("slack", ToolStatus::Ready, vec![post()]);
        long.description = "Read Slack threads and channel history, search messages, post".into();
        long.error = None;
        let narrow = table(&ToolList { tools: vec![long] }, Some(40));
        assert!(narrow.lines().all(|l| l.chars().count() <= 40), "{narrow}");
        assert!(narrow.contains("Read Slack"), "{narrow}");
        assert!(narrow.contains('…'), "{narrow}");
        assert_eq!(
            table(&ToolList { tools: Vec::new() }, None),
            "no tools: the server's TOOL_DIRS holds none (docs/tools.md)\n"
        );
    }

    /// Whatever a tool's folder or a plugin's docstring holds, nothing reaches the terminal
    /// that acts on it.
    #[test]
    fn server_text_is_cleaned() {
        let mut hostile = tool("evil", ToolStatus::Broken, vec![]);
        hostile.description = "fine\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2Jtext".into();
        hostile.error = Some("bad\r\x1b[31mred\x1b[0m\u{9b}2J".into());
        hostile.source = "/x\x1b]0;title\x07".into();
        let shown = table(
            &ToolList {
                tools: vec![hostile.clone()],
            },
            None,
        ) + &details(&hostile);
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "{shown:?}"
        );
        assert!(shown.contains("finetext"), "{shown}");
    }

    /// Every method with its parameters: type, required or default, description, the
    /// required ones first; approval marked; the returned type.
    #[test]
    fn show_lists_each_method_with_its_parameters() {
        let mut github = tool("github", ToolStatus::Ready, vec![search(), post()]);
        github.hosts = vec!["api.github.com".into()];
        github.secrets = vec!["GITHUB_TOKEN".into()];
        github.shadows = vec!["/opt/centaur/tools/github".into()];
        assert_eq!(
            details(&github),
            "\
github (ready)
  the github tool
source   /srv/tools/github
shadows  /opt/centaur/tools/github
hosts    api.github.com
secrets  GITHUB_TOKEN

search_issues(query, labels?, limit=20, repo?, state=\"open\") -> array of object
    Search issues and pull requests.

    Uses GitHub's search syntax.
    query   string             required        What to look for.
    labels  array of string    optional
    limit   integer            default 20      At most this many.
    repo    string | null      optional        owner/name
    state   \"open\" | \"closed\"  default \"open\"

post_message(channel, text)  [needs approval]
    Post to a channel.
    channel  string  required
    text     string  required
"
        );
        let loading = tool("http", ToolStatus::Loading, Vec::new());
        let shown = details(&loading);
        assert!(shown.contains("hosts    (none)"), "{shown}");
        assert!(shown.contains("being read"), "{shown}");
    }

    #[test]
    fn types_read_from_schemas() {
        for (schema, said) in [
            (json!({"type": "string"}), "string"),
            (json!({"type": ["integer", "null"]}), "integer | null"),
            (
                json!({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "integer"}}]}),
                "string | array of integer",
            ),
            (json!({"$ref": "#/$defs/Issue"}), "Issue"),
            (json!({"const": 3}), "3"),
            (json!({}), "any"),
        ] {
            assert_eq!(type_of(&schema), said, "{schema}");
        }
    }

    /// The arguments as given, from stdin, from a file, or none; anything but a JSON object
    /// is refused with where it came from.
    #[test]
    fn arguments_come_from_the_line_stdin_or_a_file() {
        let mut no_stdin = std::io::empty();
        assert_eq!(read_arguments(None, &mut no_stdin).unwrap(), json!({}));
        assert_eq!(
            read_arguments(Some(r#"{"n": 1}"#), &mut no_stdin).unwrap(),
            json!({"n": 1})
        );
        let mut stdin = std::io::Cursor::new(br#"{"url": "https://example.com"}"#.to_vec());
        assert_eq!(
            read_arguments(Some("-"), &mut stdin).unwrap(),
            json!({"url": "https://example.com"})
        );
        let dir = std::env::temp_dir().join(format!("centaur-tools-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("args.json");
        std::fs::write(&file, r#"{"sql": "select 1"}"#).unwrap();
        assert_eq!(
            read_arguments(Some(&format!("@{}", file.display())), &mut no_stdin).unwrap(),
            json!({"sql": "select 1"})
        );
        std::fs::remove_dir_all(&dir).unwrap();

        let error = read_arguments(Some("[1]"), &mut no_stdin).unwrap_err();
        assert!(
            error.to_string().contains("a JSON array, not an object"),
            "{error}"
        );
        let error = read_arguments(Some("{repo: x}"), &mut no_stdin).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("the arguments from the command line are not JSON"),
            "{error}"
        );
        let error = read_arguments(Some("@/nonexistent/args.json"), &mut no_stdin).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/args.json"),
            "{error}"
        );
        assert_eq!(CliError::from(error).exit_code(), 2);
    }
}
