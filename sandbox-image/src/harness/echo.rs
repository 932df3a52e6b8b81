//! `echo`: answers with the message it got. For tests and benchmarks.

use async_trait::async_trait;
use centaur_protocol::EventBody;
use centaur_protocol::runner::Finish;

use super::Harness;
use crate::turn::Turn;

pub struct Echo;

#[async_trait]
impl Harness for Echo {
    async fn turn(&mut self, turn: &mut Turn) -> Finish {
        let text = turn.prompt();
        turn.emit(EventBody::AgentMessage { text: text.clone() });
        Finish::Completed { result_text: text }
    }
}
