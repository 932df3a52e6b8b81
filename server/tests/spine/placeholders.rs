//! Placeholders that reach a request body (an agent ran `env`) never make a thread unusable.
//!
//! The real Codex CLI runs `env` in a real sandbox; the output, the sandbox's placeholders in,
//! goes back to the model in the next request body and stays in the thread's history. The proxy
//! forwards such bodies unchanged (it never swaps into a body, so the real key never enters
//! one), audits the placeholders they carried by name, and every later turn works.

use std::time::Duration;

use serde_json::json;

use centaur_test_support::events::{is_terminal, last_id};
use centaur_test_support::model::{HELLO, MockModel, Reply};
use centaur_test_support::proxy::REAL_OPENAI_KEY;

#[tokio::test]
async fn a_thread_whose_history_holds_placeholders_keeps_working() {
    let model = MockModel::start(vec![(
        "env",
        Reply::Command {
            cmd: "env".into(),
            then: "done".into(),
        },
    )])
    .await;
    let seen = model.seen.clone();
    let stack = model.codex_stack("placeholders", "never").await;
    let key = "api:placeholders";

    // The turn that runs `env`: its output goes back to the model in the next request.
    stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "harness": "codex", "message": "run env"}),
        )
        .await;
    let events = stack.until(key, 0, is_terminal).await;
    let end = events.last().unwrap();
    assert_eq!(end["type"], "execution.completed", "{events:#?}");
    assert_eq!(end["result_text"], "done", "{events:#?}");
    let sandbox = stack.proxy.registry.list();
    assert_eq!(sandbox.len(), 1, "one sandbox serves the thread");
    let placeholder = sandbox[0].placeholders["OPENAI_API_KEY"].clone();
    {
        let seen = seen.lock().unwrap();
        assert!(
            seen.outputs.iter().any(|o| o.contains(&placeholder)),
            "the `env` output holds the placeholder: {:?}",
            seen.outputs
        );
    }

    // The next turns of the same thread: their bodies carry the history, placeholder in.
    let mut after = last_id(&events);
    for turn in ["say hello", "say hello again"] {
        let before = seen.lock().unwrap().bodies.len();
        stack
            .server
            .post(
                "/agent/execute",
                json!({"thread_key": key, "message": turn}),
            )
            .await;
        let events = stack.until(key, after, is_terminal).await;
        let end = events.last().unwrap();
        assert_eq!(end["type"], "execution.completed", "{turn}: {events:#?}");
        assert_eq!(end["result_text"], HELLO, "{turn}: {events:#?}");
        assert!(
            events.iter().all(|e| e["type"] != "egress.denied"),
            "{turn}: {events:#?}"
        );
        let seen = seen.lock().unwrap();
        assert!(
            seen.bodies[before..]
                .iter()
                .any(|b| b.to_string().contains(&placeholder)),
            "{turn}: the request carried the history with the placeholder"
        );
        after = last_id(&events);
    }

    {
        let seen = seen.lock().unwrap();
        assert!(
            seen.bodies
                .iter()
                .all(|b| !b.to_string().contains(REAL_OPENAI_KEY)),
            "the real key never enters a body"
        );
        assert!(
            seen.authorizations
                .iter()
                .all(|a| a == &format!("Bearer {REAL_OPENAI_KEY}")),
            "the header was swapped on every request: {:?}",
            seen.authorizations
        );
    }

    // The audit: the model requests were allowed, and those whose body carried the placeholder
    // name its secret.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&stack.server.database_url)
        .await
        .unwrap();
    let mut rows: Vec<(String, String, Vec<String>)> = Vec::new();
    for _ in 0..50 {
        rows = sqlx::query_as(
            "SELECT path, decision, body_placeholders FROM egress_audit \
             WHERE host = '127.0.0.1' ORDER BY id",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        if rows.iter().filter(|(_, _, b)| !b.is_empty()).count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        rows.iter().all(|(_, decision, _)| decision == "allowed"),
        "{rows:#?}"
    );
    let carrying: Vec<_> = rows.iter().filter(|(_, _, b)| !b.is_empty()).collect();
    assert!(
        carrying.len() >= 3,
        "the request after `env` and both later turns' requests carried it: {rows:#?}"
    );
    assert!(
        carrying
            .iter()
            .all(|(path, _, names)| path == "/v1/responses" && names == &["OPENAI_API_KEY"]),
        "{rows:#?}"
    );
}
