//! `centaur-tool`: the runner binary started under that name (or as `centaur-runner tool …`),
//! for the agent and its scripts inside a sandbox. It talks to the runner's tools endpoint
//! (`CENTAUR_TOOLS_URL`), never to the server: it holds no token.
//!
//! Exit codes (as `centaur tools`): 0 done; 1 the call failed (the tool's error, a denial, a
//! timeout, no such tool or method, the endpoint unreachable), its message on stderr; 2 bad
//! usage (arguments that are not a JSON object, arguments the method refuses).

use std::io::{Read, Write};
use std::process::ExitCode;

use centaur_protocol::tools::{ToolCallAnswer, ToolInfo, ToolList, ToolStatus};
use clap::{Parser, Subcommand};
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::link::{Link, LinkError};

/// Lists and calls Centaur's tools from inside a sandbox, or serves them to an agent over MCP.
#[derive(Parser)]
#[command(name = "centaur-tool", version)]
struct Args {
    /// The runner's tools endpoint.
    #[arg(
        long,
        env = "CENTAUR_TOOLS_URL",
        default_value = "http://127.0.0.1:3129"
    )]
    url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every tool, its status and its methods.
    List {
        /// Print `GET /tools`'s answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One tool as JSON: its methods with their parameters (JSON Schema).
    Show { tool: String },
    /// Calls a method and prints its result as JSON.
    Call {
        tool: String,
        method: String,
        /// The arguments, a JSON object (`-` reads them from stdin).
        #[arg(default_value = "{}")]
        arguments: String,
    },
    /// Serves every ready method as an MCP tool over stdio (for Codex, Claude Code and other
    /// MCP clients).
    Mcp,
}

/// `centaur-tool …` with the process's own arguments.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// `centaur-tool` with `args` (the first is the program's name).
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = Args::parse_from(args);
    let filter = match &args.command {
        // The MCP client shows stderr in its logs: say more there.
        Command::Mcp => "info",
        Command::List { .. } | Command::Show { .. } | Command::Call { .. } => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let link = match super::endpoint_link(&args.url) {
        Ok(link) => link,
        Err(error) => return fail(2, &format!("--url / CENTAUR_TOOLS_URL: {error}")),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(1, &format!("no runtime: {error}")),
    };
    runtime.block_on(run(args.command, link, args.url))
}

async fn run(command: Command, link: Link, url: String) -> ExitCode {
    match command {
        Command::Mcp => {
            let input = tokio::io::BufReader::new(tokio::io::stdin());
            super::mcp::serve(input, tokio::io::stdout(), link, url).await;
            ExitCode::SUCCESS
        }
        Command::List { json } => {
            match link.call::<(), ToolList>(Method::GET, "/tools", None).await {
                Ok(list) => {
                    let list = list.unwrap_or(ToolList { tools: Vec::new() });
                    if json {
                        print_json(&serde_json::to_value(&list).expect("serializable"));
                    } else {
                        print_list(&list);
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => refused(&error, &url),
            }
        }
        Command::Show { tool } => {
            let path = format!("/tools/{}", segment(&tool));
            match link.call::<(), ToolInfo>(Method::GET, &path, None).await {
                Ok(Some(info)) => {
                    print_json(&serde_json::to_value(&info).expect("serializable"));
                    ExitCode::SUCCESS
                }
                Ok(None) => fail(1, "the endpoint answered with no content"),
                Err(error) => refused(&error, &url),
            }
        }
        Command::Call {
            tool,
            method,
            arguments,
        } => {
            let arguments = if arguments == "-" {
                let mut text = String::new();
                if let Err(error) = std::io::stdin().read_to_string(&mut text) {
                    return fail(2, &format!("cannot read the arguments from stdin: {error}"));
                }
                text
            } else {
                arguments
            };
            let arguments: Value = match serde_json::from_str(&arguments) {
                Ok(value @ Value::Object(_)) => value,
                Ok(_) => return fail(2, "the arguments must be a JSON object, like '{\"q\": 1}'"),
                Err(error) => return fail(2, &format!("the arguments are not JSON: {error}")),
            };
            let path = format!("/tools/{}/{}", segment(&tool), segment(&method));
            match link
                .call::<Value, ToolCallAnswer>(Method::POST, &path, Some(&arguments))
                .await
            {
                Ok(Some(answer)) => {
                    print_json(&answer.result);
                    ExitCode::SUCCESS
                }
                Ok(None) => fail(1, "the endpoint answered with no content"),
                Err(error) => refused(&error, &url),
            }
        }
    }
}

/// A name as a path segment: one the endpoint does not serve is left for it to refuse.
fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn print_json(value: &Value) {
    let text = serde_json::to_string_pretty(value).expect("serializable");
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}

fn print_list(list: &ToolList) {
    let mut stdout = std::io::stdout().lock();
    if list.tools.is_empty() {
        let _ = writeln!(stdout, "no tools");
    }
    for tool in &list.tools {
        let description = if tool.description.is_empty() {
            String::new()
        } else {
            format!(": {}", tool.description)
        };
        let _ = writeln!(
            stdout,
            "{} ({}){description}",
            tool.name,
            tool.status.as_str()
        );
        match tool.status {
            ToolStatus::Broken | ToolStatus::Loading => {
                if let Some(error) = &tool.error {
                    let _ = writeln!(stdout, "  {error}");
                }
            }
            ToolStatus::Ready => {}
        }
        for method in &tool.methods {
            let properties = method.parameters["properties"].as_object();
            let required: Vec<&str> = method.parameters["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let parameters: Vec<String> = properties
                .into_iter()
                .flatten()
                .map(|(name, _)| {
                    if required.contains(&name.as_str()) {
                        name.clone()
                    } else {
                        format!("{name}?")
                    }
                })
                .collect();
            let summary = method.description.lines().next().unwrap_or_default();
            let approval = if method.approval {
                " [needs approval]"
            } else {
                ""
            };
            let _ = writeln!(
                stdout,
                "  {}({}){approval}  {summary}",
                method.name,
                parameters.join(", ")
            );
        }
    }
}

/// The server's refusal on stderr; 2 when the method refuses the arguments (400), 1 otherwise
/// (no such tool or method is a 404, not a usage error: `centaur tools call` says 1 too).
fn refused(error: &LinkError, url: &str) -> ExitCode {
    let usage = match error {
        LinkError::Status { status, .. } => *status == StatusCode::BAD_REQUEST,
        LinkError::Unreachable(_) | LinkError::Protocol(_) => false,
    };
    fail(
        if usage { 2 } else { 1 },
        &super::mcp::failure_text(error, url),
    )
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("centaur-tool: {message}");
    ExitCode::from(code)
}
