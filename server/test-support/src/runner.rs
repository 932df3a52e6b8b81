//! The test playing `centaur-runner`: claims executions and posts their events over the
//! runner API, numbering them as a runner does.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::server::enc;

/// The test playing `centaur-runner`.
pub struct Runner {
    http: reqwest::Client,
    url: String,
    pub token: String,
    pub seq: i64,
}

impl Runner {
    /// The runner of a sandbox given `token`, on the server at `url`, before its first event.
    pub fn new(http: reqwest::Client, url: &str, token: &str) -> Runner {
        Runner {
            http,
            url: url.to_owned(),
            token: token.to_owned(),
            seq: 0,
        }
    }

    pub async fn claim(&self, thread_key: &str, wait_ms: u64) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!(
                "{}/runner/v1/threads/{}/claim",
                self.url,
                enc(thread_key)
            ))
            .bearer_auth(&self.token)
            .json(&json!({"wait_ms": wait_ms}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap()
            },
        )
    }

    /// Claims, and fails the test if there is nothing to claim. Returns the execution id.
    pub async fn must_claim(&mut self, thread_key: &str) -> Uuid {
        let (status, body) = self.claim(thread_key, 2000).await;
        assert_eq!(status, StatusCode::OK, "claim: {body}");
        self.seq = body["runner_seq"].as_i64().unwrap();
        body["execution_id"].as_str().unwrap().parse().unwrap()
    }

    /// Posts events (numbered from the runner's next seq) and an optional finish.
    pub async fn post(
        &mut self,
        execution_id: Uuid,
        events: Vec<Value>,
        finish: Option<Value>,
    ) -> (StatusCode, Value) {
        let events: Vec<Value> = events
            .into_iter()
            .map(|mut e| {
                self.seq += 1;
                e["seq"] = json!(self.seq);
                e
            })
            .collect();
        self.post_raw(execution_id, json!({"events": events, "finish": finish}))
            .await
    }

    pub async fn post_raw(&self, execution_id: Uuid, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!(
                "{}/runner/v1/executions/{execution_id}/events",
                self.url
            ))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }
}
