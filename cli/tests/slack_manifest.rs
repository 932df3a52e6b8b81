//! `manifests/slack-app.yaml` gives the bridge what it uses: a scope for every Web API method
//! the server calls with the bot token, the events it takes, interactivity for its buttons,
//! Socket Mode on (with webhook mode's addresses in comments), and nothing else.
//!
//! The manifest is read with a small reader for the YAML it is written in (nested mappings,
//! lists of plain scalars, comments), not a YAML library: that is all the file uses, and the
//! reader refuses anything else, so a construct it does not know fails the test instead of
//! being misread.
#![allow(clippy::unwrap_used)] // tests stop at the first surprise

use std::collections::{BTreeMap, BTreeSet};

use centaur_protocol::slack::web::{
    AppendStream, CompleteUpload, ConversationsInfo, ConversationsReplies, GetUploadUrl, Method,
    PostMessage, ReactionsAdd, ReactionsRemove, SetStatus, StartStream, StopStream, TokenKind,
    Update, UsersInfo,
};

const MANIFEST: &str = include_str!("../../manifests/slack-app.yaml");

/// A value in the manifest: a scalar or a list of scalars, by its dotted path.
#[derive(Debug, PartialEq)]
enum Value {
    Scalar(String),
    List(Vec<String>),
}

/// Every leaf of the manifest by its dotted path (`settings.socket_mode_enabled`).
fn leaves(yaml: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    // The keys open at each indentation.
    let mut open: Vec<(usize, String)> = Vec::new();
    for (n, raw) in yaml.lines().enumerate() {
        let line = raw.trim_end();
        let text = line.trim_start();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        assert!(!line.contains('\t'), "line {}: a tab", n + 1);
        let indent = line.len() - text.len();
        if let Some(item) = text.strip_prefix("- ") {
            let path = open
                .iter()
                .map(|(_, k)| k.as_str())
                .collect::<Vec<_>>()
                .join(".");
            let item = item.split(" #").next().unwrap().trim();
            assert!(
                !item.contains(": ") && !item.ends_with(':'),
                "line {}: only lists of plain values are read",
                n + 1
            );
            match out.entry(path).or_insert_with(|| Value::List(Vec::new())) {
                Value::List(items) => items.push(item.to_owned()),
                Value::Scalar(_) => panic!("line {}: a list under a scalar", n + 1),
            }
            continue;
        }
        open.retain(|(at, _)| *at < indent);
        let (key, value) = text
            .split_once(':')
            .unwrap_or_else(|| panic!("line {}: not `key: value`", n + 1));
        let value = value.split(" #").next().unwrap().trim();
        let value = value.trim_matches('"');
        open.push((indent, key.to_owned()));
        if !value.is_empty() {
            let path = open
                .iter()
                .map(|(_, k)| k.as_str())
                .collect::<Vec<_>>()
                .join(".");
            assert!(
                out.insert(path.clone(), Value::Scalar(value.to_owned()))
                    .is_none(),
                "{path} twice"
            );
            open.pop();
        }
    }
    out
}

fn scalar<'a>(manifest: &'a BTreeMap<String, Value>, path: &str) -> &'a str {
    match manifest.get(path) {
        Some(Value::Scalar(value)) => value,
        other => panic!("{path}: {other:?}"),
    }
}

fn list(manifest: &BTreeMap<String, Value>, path: &str) -> BTreeSet<String> {
    match manifest.get(path) {
        Some(Value::List(items)) => {
            let set: BTreeSet<String> = items.iter().cloned().collect();
            assert_eq!(set.len(), items.len(), "{path} repeats an item");
            set
        }
        other => panic!("{path}: {other:?}"),
    }
}

/// The scope each Web API method the bridge calls with the bot token needs (Slack's method
/// reference; `slack-facts.md`). `auth.test` and `chat.getPermalink` need none;
/// `apps.connections.open` takes the app-level token's `connections:write`, which is not a
/// manifest scope.
fn scopes_needed() -> BTreeMap<&'static str, Vec<&'static str>> {
    fn bot<M: Method>() -> &'static str {
        assert_eq!(M::TOKEN, TokenKind::Bot, "{}", M::NAME);
        M::NAME
    }
    let history = vec![
        "channels:history",
        "groups:history",
        "im:history",
        "mpim:history",
    ];
    let read = vec!["channels:read", "groups:read", "im:read", "mpim:read"];
    BTreeMap::from([
        (bot::<PostMessage>(), vec!["chat:write"]),
        (bot::<Update>(), vec!["chat:write"]),
        (bot::<StartStream>(), vec!["chat:write"]),
        (bot::<AppendStream>(), vec!["chat:write"]),
        (bot::<StopStream>(), vec!["chat:write"]),
        (bot::<SetStatus>(), vec!["assistant:write"]),
        (bot::<ReactionsAdd>(), vec!["reactions:write"]),
        (bot::<ReactionsRemove>(), vec!["reactions:write"]),
        (bot::<ConversationsReplies>(), history),
        (bot::<ConversationsInfo>(), read),
        (bot::<UsersInfo>(), vec!["users:read"]),
        (bot::<GetUploadUrl>(), vec!["files:write"]),
        (bot::<CompleteUpload>(), vec!["files:write"]),
    ])
}

#[test]
fn the_manifest_grants_what_the_bridge_uses_and_nothing_more() {
    let manifest = leaves(MANIFEST);
    assert_eq!(scalar(&manifest, "_metadata.major_version"), "1");
    assert_eq!(scalar(&manifest, "display_information.name"), "Centaur");
    assert_eq!(
        scalar(&manifest, "features.bot_user.display_name"),
        "Centaur"
    );
    // Direct messages with the bot.
    assert_eq!(
        scalar(&manifest, "features.app_home.messages_tab_enabled"),
        "true"
    );

    // Every method's scope, and no scope no method needs (besides mentions being delivered).
    let granted = list(&manifest, "oauth_config.scopes.bot");
    let mut needed: BTreeSet<String> = scopes_needed()
        .into_values()
        .flatten()
        .map(str::to_owned)
        .collect();
    needed.insert("app_mentions:read".to_owned());
    assert_eq!(granted, needed);
    // Slack takes assistant:write only with the assistant view on.
    assert!(!scalar(&manifest, "features.assistant_view.assistant_description").is_empty());

    // Mentions, and messages in channels, private channels, DMs and group DMs.
    assert_eq!(
        list(&manifest, "settings.event_subscriptions.bot_events"),
        [
            "app_mention",
            "message.channels",
            "message.groups",
            "message.im",
            "message.mpim"
        ]
        .map(str::to_owned)
        .into()
    );
    // Each message event has its history scope (Slack delivers nothing without it).
    for (event, scope) in [
        ("message.channels", "channels:history"),
        ("message.groups", "groups:history"),
        ("message.im", "im:history"),
        ("message.mpim", "mpim:history"),
    ] {
        assert!(granted.contains(scope), "{event} needs {scope}");
    }

    // The buttons, and Socket Mode as shipped; webhook mode's addresses are there to
    // uncomment, both at the one route the server serves.
    assert_eq!(
        scalar(&manifest, "settings.interactivity.is_enabled"),
        "true"
    );
    assert_eq!(scalar(&manifest, "settings.socket_mode_enabled"), "true");
    assert!(!manifest.contains_key("settings.event_subscriptions.request_url"));
    assert!(!manifest.contains_key("settings.interactivity.request_url"));
    let commented: Vec<&str> = MANIFEST
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("# request_url:"))
        .collect();
    assert_eq!(
        commented,
        ["# request_url: https://<your host>/api/webhooks/slack"; 2]
    );
}

/// The reader refuses what it does not read, rather than misreading it.
#[test]
fn the_reader_reads_this_subset_only() {
    let read = leaves("a:\n  b: 1 # note\n  c:\n    - x\n    - y\nd: \"q\"\n");
    assert_eq!(read["a.b"], Value::Scalar("1".into()));
    assert_eq!(read["a.c"], Value::List(vec!["x".into(), "y".into()]));
    assert_eq!(read["d"], Value::Scalar("q".into()));
    assert!(std::panic::catch_unwind(|| leaves("a:\n  - k: v\n")).is_err());
    assert!(std::panic::catch_unwind(|| leaves("a: 1\na: 2\n")).is_err());
}
