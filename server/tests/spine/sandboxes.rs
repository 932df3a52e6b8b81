//! The local backend: real bubblewrap sandboxes running the real runner, behind a real
//! egress proxy.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use centaur_test_support::events::{SseReader, lines, result_text};
use centaur_test_support::http::http;
use centaur_test_support::local_stack::{LocalStack, kill_sandboxes};
use centaur_test_support::process::{ServerProcess, free_port, process_env};
use centaur_test_support::proxy::{PROXY_TOKEN, TestProxy};
use centaur_test_support::server::ADMIN_KEY;
use centaur_test_support::temp::temp_dir;

/// Everything asserted from inside a real sandbox.
#[tokio::test]
async fn a_sandbox_sees_only_its_workspace_and_reaches_only_the_proxy() {
    let stack = LocalStack::start(
        "sandbox-isolation",
        0,
        json!({"allow": ["api.openai.com"],
               "secrets": [{"name": "OPENAI_API_KEY", "hosts": ["api.openai.com"],
                            "headers": ["authorization"], "format": "Bearer {value}"}]}),
    )
    .await;
    let data = stack.data_dir();
    let server_port = stack.server.url.rsplit(':').next().unwrap().to_owned();
    let script = format!(
        r#"
echo uid=$(id -u)
echo user=$(whoami)
echo hostname=$(hostname)
echo pwd=$(pwd)
(exec 3<>/dev/tcp/1.1.1.1/80) 2>/dev/null && echo internet=open || echo internet=blocked
(exec 3<>/dev/tcp/127.0.0.1/{server_port}) 2>/dev/null && echo server_tcp=open || echo server_tcp=blocked
echo processes=$(ls /proc | grep -cE '^[0-9]+$')
echo commands=$(cat /proc/[0-9]*/comm 2>/dev/null | sort -u | tr '\n' ' ')
touch /usr/x 2>/dev/null && echo write_usr=yes || echo write_usr=no
touch /etc/x 2>/dev/null && echo write_etc=yes || echo write_etc=no
touch /x 2>/dev/null && echo write_root=yes || echo write_root=no
touch /workspace/kept && echo write_workspace=yes || echo write_workspace=no
touch /tmp/x && echo write_tmp=yes || echo write_tmp=no
ls {data} >/dev/null 2>&1 && echo sees_data=yes || echo sees_data=no
ls /root >/dev/null 2>&1 && echo sees_root_home=yes || echo sees_root_home=no
ls /home | tr '\n' ' ' | sed 's/^/homes=/'; echo
perl -e '$r = syscall(250, 0, -4, 0); print "keyctl=", ($r < 0 ? "refused" : "allowed"), "\n"'
ls /etc/ssl | tr '\n' ' ' | sed 's/^/etc_ssl=/'; echo
echo placeholder=$OPENAI_API_KEY
echo proxy=$HTTPS_PROXY
echo ca=$SSL_CERT_FILE
curl -s -o /dev/null -w 'denied_status=%{{http_code}}\n' -x "$HTTP_PROXY" http://evil.example/ || echo denied_status=curl-failed
"#,
        data = data.display()
    );
    let done = stack.turn("api:isolation", "shell", &script).await;
    let text = result_text(&done);
    let seen = lines(text);
    let expect = |key: &str, value: &str| {
        assert_eq!(
            seen.get(key).map(String::as_str),
            Some(value),
            "{key} in:\n{text}"
        );
    };
    expect("uid", "1000");
    expect("user", "sandbox");
    expect("hostname", "sandbox");
    expect("pwd", "/workspace");
    expect("internet", "blocked");
    expect("server_tcp", "blocked");
    let commands = &seen["commands"];
    assert!(
        !commands.contains("postgres"),
        "host processes are visible: {commands}"
    );
    assert!(commands.contains("centaur-runner"), "{commands}");
    expect("write_usr", "no");
    expect("write_etc", "no");
    expect("write_root", "no");
    expect("write_workspace", "yes");
    expect("write_tmp", "yes");
    expect("sees_data", "no");
    expect("sees_root_home", "no");
    expect("homes", "sandbox ");
    expect("keyctl", "refused");
    expect("etc_ssl", "certs ");
    expect("proxy", "http://127.0.0.1:3128");
    expect("denied_status", "403");
    let processes: usize = seen["processes"].parse().unwrap();
    assert!(processes < 10, "sees {processes} processes:\n{text}");
    let placeholder = &seen["placeholder"];
    assert!(placeholder.starts_with("cph_"), "{text}");
    // The sandbox's environment holds nothing but placeholders.
    let env = result_text(&stack.turn("api:isolation", "shell", "env").await).to_owned();
    assert!(!env.contains(PROXY_TOKEN));
    assert!(
        !env.contains("cst_"),
        "the runner token stays with the runner:\n{env}"
    );
    assert!(!env.contains("DATABASE_URL"), "{env}");
    // The workspace is the thread's, on the host, under the server's data directory.
    let workspaces: Vec<_> = std::fs::read_dir(data.join("workspaces"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(workspaces.len(), 1);
    assert!(workspaces[0].path().join("kept").exists());
}

/// Warm spawns, interrupts, a crashed harness replaced, and the workspace kept across sandboxes.
#[tokio::test]
async fn warm_pool_interrupts_and_a_crashed_sandbox_is_replaced() {
    let stack = LocalStack::start("sandbox-lifecycle", 1, json!({})).await;
    wait_for_pool(&stack).await;

    // A new thread gets a warm sandbox.
    let spawned = stack
        .server
        .post(
            "/agent/spawn",
            json!({"thread_key": "api:warm", "harness": "shell"}),
        )
        .await;
    assert_eq!(spawned["ready_source"], "warm_pool", "{spawned}");
    let done = stack
        .turn(
            "api:warm",
            "shell",
            "echo from-warm > /workspace/note; cat /workspace/note",
        )
        .await;
    assert_eq!(result_text(&done), "from-warm\n");

    // Echo answers with the message.
    let done = stack.turn("api:echo", "echo", "hello sandbox").await;
    assert_eq!(result_text(&done), "hello sandbox");

    // An interrupt ends a long command at once; the sandbox serves the next turn.
    let accepted = stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": "api:warm", "message": "sleep 30"}),
        )
        .await;
    let execution_id = accepted["execution_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    stack
        .server
        .post(
            "/agent/threads/api:warm/interrupt",
            json!({"reason": "enough"}),
        )
        .await;
    let ended = stack.terminal("api:warm", &execution_id).await;
    assert_eq!(ended["type"], "execution.cancelled", "{ended}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let done = stack.turn("api:warm", "shell", "echo still-here").await;
    assert_eq!(result_text(&done), "still-here\n");

    // A command that hangs past the execution's time budget: failed, with a reason, and the
    // sandbox goes on serving.
    let accepted = stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": "api:warm", "message": "sleep 60", "max_duration_ms": 1000}),
        )
        .await;
    let execution_id = accepted["execution_id"].as_str().unwrap().to_owned();
    let ended = stack.terminal("api:warm", &execution_id).await;
    assert_eq!(ended["type"], "execution.failed", "{ended}");
    assert!(!ended["error"].as_str().unwrap().is_empty(), "{ended}");
    let done = stack.turn("api:warm", "shell", "echo after-deadline").await;
    assert_eq!(result_text(&done), "after-deadline\n");

    // A non-zero exit status fails the turn, with the output and the status.
    let done = stack.turn("api:warm", "shell", "echo oops; exit 3").await;
    assert_eq!(done["type"], "execution.failed", "{done}");
    assert_eq!(done["error"], "`echo oops; exit 3` exited with status 3");
    assert_eq!(done["output"], "oops\n[exit status 3]\n");

    // The harness's process dies mid-turn: the execution fails with a readable error, the
    // sandbox is released, and the next turn gets a new sandbox with the same workspace.
    let (_, before) = stack
        .server
        .admin(Method::GET, "/agent/threads/api:warm", Value::Null)
        .await;
    let old_sandbox = before["sandbox"]["sandbox_id"].as_str().unwrap().to_owned();
    let died = stack
        .turn("api:warm", "shell", "kill -9 $PPID; sleep 5")
        .await;
    assert_eq!(died["type"], "execution.failed", "{died}");
    assert!(
        died["error"]
            .as_str()
            .unwrap()
            .contains("stopped unexpectedly"),
        "{died}"
    );
    let done = stack.turn("api:warm", "shell", "cat /workspace/note").await;
    assert_eq!(result_text(&done), "from-warm\n");
    let (_, after) = stack
        .server
        .admin(Method::GET, "/agent/threads/api:warm", Value::Null)
        .await;
    assert_ne!(
        after["sandbox"]["sandbox_id"].as_str().unwrap(),
        old_sandbox
    );
    assert!(
        !is_running(&stack.data_dir(), &old_sandbox),
        "the dead sandbox is gone"
    );

    // Released: the process and its proxy registration go.
    let sandbox = after["sandbox"]["sandbox_id"].as_str().unwrap().to_owned();
    let (status, _) = stack
        .server
        .admin(Method::POST, "/agent/threads/api:warm/release", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!is_running(&stack.data_dir(), &sandbox));
    assert!(stack.proxy.registry.get(&sandbox).is_none());
}

/// A thread's own approval policy: `always` makes the shell ask before each command.
#[tokio::test]
async fn a_thread_can_ask_for_approvals() {
    let stack = LocalStack::start("approvals", 0, json!({})).await;
    let key = "api:careful";
    let accepted = stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "harness": "shell", "message": "echo ran", "approval_policy": "always"}),
        )
        .await;
    let execution_id = accepted["execution_id"].as_str().unwrap().to_owned();
    let mut stream = stack.server.events(key, "after_event_id=0").await;
    let request = loop {
        let frame = stream
            .next(Duration::from_secs(30))
            .await
            .expect("an approval request");
        if frame.data["type"] == "approval.requested" {
            break frame.data;
        }
    };
    assert_eq!(request["kind"], "command");
    assert_eq!(request["summary"], "run `echo ran`");
    let approval_id = request["approval_id"].as_str().unwrap();
    stack
        .server
        .post(
            &format!("/agent/threads/{key}/approvals/{approval_id}"),
            json!({"decision": "deny"}),
        )
        .await;
    let done = stack.terminal(key, &execution_id).await;
    assert_eq!(result_text(&done), "the command was not approved: echo ran");
    // Kept for the thread: the next turn asks too.
    let accepted = stack
        .server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": "echo again"}),
        )
        .await;
    let execution_id = accepted["execution_id"].as_str().unwrap().to_owned();
    loop {
        let frame = stream
            .next(Duration::from_secs(30))
            .await
            .expect("a second request");
        if frame.data["type"] == "approval.requested" {
            let id = frame.data["approval_id"].as_str().unwrap().to_owned();
            stack
                .server
                .post(
                    &format!("/agent/threads/{key}/approvals/{id}"),
                    json!({"decision": "approve"}),
                )
                .await;
            break;
        }
    }
    let done = stack.terminal(key, &execution_id).await;
    assert_eq!(result_text(&done), "again\n");
}

/// With a cgroup root, each sandbox's processes join its own cgroup with its limits. (The root
/// here is a plain folder laid out like a delegated cgroup v2 one: this machine has cgroup v1.)
#[tokio::test]
async fn sandboxes_get_their_own_cgroup_when_a_root_is_delegated() {
    let fake = temp_dir("cgroup-root");
    std::fs::write(
        fake.join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    std::fs::write(fake.join("cgroup.subtree_control"), "").unwrap();
    let root = fake.clone();
    let stack = LocalStack::start_with("cgroups", 0, json!({}), move |config, _| {
        config.cgroup_root = Some(root);
        config.sandbox_memory_mb = 512;
        config.sandbox_processes = 128;
    })
    .await;
    let done = stack.turn("api:cgroup", "echo", "limited").await;
    assert_eq!(result_text(&done), "limited");
    let (_, detail) = stack
        .server
        .admin(Method::GET, "/agent/threads/api:cgroup", Value::Null)
        .await;
    let cgroup = fake.join(detail["sandbox"]["sandbox_id"].as_str().unwrap());
    let read = |file: &str| std::fs::read_to_string(cgroup.join(file)).unwrap();
    assert_eq!(read("memory.max"), (512u64 << 20).to_string());
    assert_eq!(read("pids.max"), "128");
    assert_eq!(
        read("cgroup.procs"),
        "0",
        "bubblewrap joined the cgroup before it started"
    );
    assert!(
        std::fs::read_to_string(fake.join("cgroup.subtree_control"))
            .unwrap()
            .contains("pids")
    );
    let _ = std::fs::remove_dir_all(fake);
}

fn is_running(data: &Path, sandbox_id: &str) -> bool {
    data.join("sandboxes").join(sandbox_id).join("pid").exists()
}

async fn wait_for_pool(stack: &LocalStack) {
    for _ in 0..200 {
        let registered = stack.proxy.registry.list().len();
        if registered >= 2 {
            // Registered with the proxy happens before the sandbox starts; give it a moment.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the warm pool never filled");
}

/// Kill the server (SIGKILL) in the middle of a turn and start it again: the sandbox keeps
/// running, its runner reconnects, and the thread's events come out complete, in order, once.
#[tokio::test]
async fn a_server_killed_mid_turn_loses_and_doubles_nothing() {
    let dir = temp_dir("server-crash");
    let proxy = TestProxy::start(None, dir.join("proxy")).await;
    let port = free_port();
    let env = process_env(&dir, &proxy).await;
    let mut server = ServerProcess::start(env!("CARGO_BIN_EXE_centaur-server"), &env, port);
    server.wait_ready().await;
    let http = http().build().unwrap();
    let key = "api:crash";
    let script = "for i in 1 2 3 4 5 6 7 8; do echo line-$i; sleep 0.4; done";
    let accepted: Value = http
        .post(format!("{}/agent/execute", server.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"thread_key": key, "harness": "shell", "message": script}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(accepted["execution_id"].is_string(), "{accepted}");

    // Wait until the turn is visibly under way, then kill the server.
    let mut stream = SseReader::open(
        &http,
        &format!("{}/agent/threads/{key}/events?after_event_id=0", server.url),
        ADMIN_KEY,
        None,
    )
    .await;
    loop {
        let frame = stream
            .next(Duration::from_secs(30))
            .await
            .expect("the turn starts");
        if frame.data["type"] == "command.output"
            && frame.data["chunk"]
                .as_str()
                .unwrap_or("")
                .contains("line-2")
        {
            break;
        }
    }
    server.kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut server = ServerProcess::start(env!("CARGO_BIN_EXE_centaur-server"), &env, port);
    server.wait_ready().await;

    // From the start: every event once, in order, and the turn completes.
    let mut stream = SseReader::open(
        &http,
        &format!("{}/agent/threads/{key}/events?after_event_id=0", server.url),
        ADMIN_KEY,
        None,
    )
    .await;
    let mut events = Vec::new();
    loop {
        let frame = stream
            .next(Duration::from_secs(30))
            .await
            .expect("the turn ends");
        let done = frame.data["type"]
            .as_str()
            .unwrap()
            .starts_with("execution.")
            && !matches!(
                frame.data["type"].as_str(),
                Some("execution.queued" | "execution.started")
            );
        events.push(frame.data);
        if done {
            break;
        }
    }
    let ids: Vec<i64> = events
        .iter()
        .map(|e| e["event_id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=ids.len() as i64).collect::<Vec<_>>(),
        "dense and in order"
    );
    let end = events.last().unwrap();
    assert_eq!(end["type"], "execution.completed", "{events:#?}");
    let expected: String = (1..=8).map(|i| format!("line-{i}\n")).collect();
    assert_eq!(end["result_text"], expected.as_str());
    let streamed: String = events
        .iter()
        .filter(|e| e["type"] == "command.output")
        .map(|e| e["chunk"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, expected, "each line streamed exactly once");
    server.terminate();
    kill_sandboxes(&dir.join("data"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Harness settings from `CENTAUR_HARNESS_ENV_FILE` reach sandboxes, and a changed file
/// reaches the next new thread without a restart (a broken one keeps the last good settings).
#[tokio::test]
async fn a_changed_harness_settings_file_reaches_the_next_sandbox() {
    let mut file = None;
    let stack = LocalStack::start_with("harness-env-file", 0, json!({}), |config, dir| {
        let path = dir.join("harness.env");
        std::fs::write(&path, "# settings\nCENTAUR_GREETING=first\n").unwrap();
        config.harness_env_file = Some(path.clone());
        file = Some(path);
    })
    .await;
    let file = file.unwrap();
    let end = stack
        .turn("api:env-1", "shell", "echo \"greeting=$CENTAUR_GREETING\"")
        .await;
    assert_eq!(end["result_text"], "greeting=first\n", "{end}");

    std::fs::write(&file, "CENTAUR_GREETING=second\n").unwrap();
    let end = stack
        .turn("api:env-2", "shell", "echo \"greeting=$CENTAUR_GREETING\"")
        .await;
    assert_eq!(end["result_text"], "greeting=second\n", "{end}");

    std::fs::write(&file, "this line is not a setting\n").unwrap();
    let end = stack
        .turn("api:env-3", "shell", "echo \"greeting=$CENTAUR_GREETING\"")
        .await;
    assert_eq!(end["result_text"], "greeting=second\n", "{end}");
}
