//! From inside a real bubblewrap sandbox: only what the proxy allows is reachable.

use std::time::Duration;

use crate::support::{REAL_KEY, intercept_policy, intercepting, tls_upstream};

/// A process in a bubblewrap sandbox with no network but the proxy's Unix socket reaches an
/// allowed HTTPS host with its credential swapped in, and nothing else.
#[tokio::test]
async fn a_bubblewrap_sandbox_reaches_only_what_the_proxy_allows() {
    assert!(
        std::process::Command::new("bwrap")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "bubblewrap is required for this test: apt-get install -y bubblewrap"
    );
    let (up, upstream_ca, seen) = tls_upstream().await;
    let (mut h, proxy_ca) = intercepting(&upstream_ca).await;
    let placeholder = h.sandbox("sb1", intercept_policy(up))["OPENAI_API_KEY"].clone();
    let run = h.dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("ca.pem"), &proxy_ca).unwrap();
    let socket = run.join("proxy.sock");
    let (proxy, shutdown, path) = (h.proxy.clone(), h.shutdown.clone(), socket.clone());
    tokio::spawn(async move { proxy.serve_unix(&path, "sb1".into(), shutdown).await });
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let sandboxed = |script: String| {
        let mut command = tokio::process::Command::new("bwrap");
        for dir in ["/usr", "/bin", "/lib", "/lib64", "/etc"] {
            command.args(["--ro-bind-try", dir, dir]);
        }
        command
            .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
            .arg("--bind").arg(&run).arg("/run/centaur")
            .arg("--ro-bind").arg(env!("CARGO_BIN_EXE_centaur-proxy")).arg("/run/centaur-proxy")
            .args(["--unshare-all", "--die-with-parent", "--clearenv"])
            .args(["--setenv", "PATH", "/usr/bin:/bin"])
            .args(["--setenv", "OPENAI_API_KEY", &placeholder])
            .args(["--setenv", "SSL_CERT_FILE", "/run/centaur/ca.pem"])
            .args(["--setenv", "CURL_CA_BUNDLE", "/run/centaur/ca.pem"])
            .args(["sh", "-c", &format!("/run/centaur-proxy forward --socket /run/centaur/proxy.sock & \
                 for i in $(seq 50); do [ -n \"$(cat /proc/net/tcp | grep ':0C38')\" ] && break; sleep 0.02; done; {script}")]);
        command.output()
    };
    let via_proxy = "curl -sS --max-time 5 -x http://127.0.0.1:3128";
    let target = format!("https://127.0.0.1:{}", up.port());

    // Allowed host, credential swapped on the way out, echo scrubbed on the way back.
    let out = sandboxed(format!(
        "{via_proxy} -H \"Authorization: Bearer $OPENAI_API_KEY\" {target}/from-sandbox"
    ))
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&placeholder) && !text.contains(REAL_KEY),
        "{text}"
    );
    assert_eq!(
        seen.lock().unwrap()[0].headers["authorization"],
        format!("Bearer {REAL_KEY}")
    );
    assert_eq!(h.next_audit().await.secrets_swapped, ["OPENAI_API_KEY"]);

    // Nothing else: not the same host directly, not another host through the proxy, and the
    // environment holds only the placeholder.
    let out = sandboxed(format!(
        "curl -sS --max-time 3 {target}/direct; echo \"exit=$?\""
    ))
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("exit=0"),
        "direct network access must fail: {text}"
    );
    let out = sandboxed(format!(
        "{via_proxy} -o /dev/null -w '%{{http_code}}' https://example.com/ ; echo"
    ))
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("200"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sandboxed("env".into()).await.unwrap();
    let env = String::from_utf8_lossy(&out.stdout);
    assert!(
        env.contains(&placeholder) && !env.contains(REAL_KEY),
        "{env}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}
