//! The Block Kit blocks the bridge posts, and the action ids and button values it reads back.
//! Limits (Slack's): 50 blocks a message; section text 3000 characters; button text 75 and value
//! 2000; `action_id`/`block_id` 255.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const MAX_BLOCKS: usize = 50;
pub const MAX_SECTION_TEXT: usize = 3000;
pub const MAX_BUTTON_TEXT: usize = 75;
pub const MAX_BUTTON_VALUE: usize = 2000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Section {
        text: Text,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        block_id: Option<String>,
    },
    Context {
        elements: Vec<Text>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        block_id: Option<String>,
    },
    Actions {
        elements: Vec<Button>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        block_id: Option<String>,
    },
    /// Standard Markdown, rendered by Slack (messages only; 12,000 characters across a message).
    Markdown {
        text: String,
    },
    Divider {},
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Text {
    Mrkdwn {
        text: String,
    },
    PlainText {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        emoji: Option<bool>,
    },
}

impl Text {
    pub fn mrkdwn(text: impl Into<String>) -> Text {
        Text::Mrkdwn { text: text.into() }
    }

    pub fn plain(text: impl Into<String>) -> Text {
        Text::PlainText {
            text: text.into(),
            emoji: Some(true),
        }
    }
}

/// A `button` element.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "button")]
pub struct Button {
    pub text: Text,
    pub action_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `primary` or `danger`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
}

/// The buttons the bridge posts, by `action_id`. The button's `value` says what it acts on
/// ([`ActionValue`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CentaurAction {
    Approve,
    ApproveForSession,
    Deny,
    /// Interrupts the thread's running turn.
    Stop,
}

impl CentaurAction {
    pub const ALL: [CentaurAction; 4] = [
        CentaurAction::Approve,
        CentaurAction::ApproveForSession,
        CentaurAction::Deny,
        CentaurAction::Stop,
    ];

    pub fn action_id(self) -> &'static str {
        match self {
            CentaurAction::Approve => "centaur_approve",
            CentaurAction::ApproveForSession => "centaur_approve_session",
            CentaurAction::Deny => "centaur_deny",
            CentaurAction::Stop => "centaur_stop",
        }
    }

    pub fn from_action_id(id: &str) -> Option<CentaurAction> {
        CentaurAction::ALL.into_iter().find(|a| a.action_id() == id)
    }

    /// The decision an approval button stands for.
    pub fn decision(self) -> Option<crate::Decision> {
        match self {
            CentaurAction::Approve => Some(crate::Decision::Approve),
            CentaurAction::ApproveForSession => Some(crate::Decision::ApproveForSession),
            CentaurAction::Deny => Some(crate::Decision::Deny),
            CentaurAction::Stop => None,
        }
    }
}

/// A button's `value`: the thread it acts on, and for approval buttons the approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionValue {
    pub thread_key: crate::ThreadKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<Uuid>,
}

impl ActionValue {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(value: &str) -> Option<ActionValue> {
        serde_json::from_str(value).ok()
    }
}

/// A button for `action` acting on `value`.
pub fn button(action: CentaurAction, label: &str, value: &ActionValue) -> Button {
    Button {
        text: Text::plain(label),
        action_id: action.action_id().to_owned(),
        value: Some(value.encode()),
        style: match action {
            CentaurAction::Approve | CentaurAction::ApproveForSession => Some("primary".into()),
            CentaurAction::Deny | CentaurAction::Stop => Some("danger".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_serialize_as_block_kit() {
        let value = ActionValue {
            thread_key: crate::ThreadKey::parse("slack:C1:1.2").unwrap(),
            approval_id: None,
        };
        let block = Block::Actions {
            elements: vec![button(CentaurAction::Stop, "Stop", &value)],
            block_id: None,
        };
        let json = serde_json::to_value(&block).unwrap();
        assert_eq!(json["type"], "actions");
        assert_eq!(json["elements"][0]["type"], "button");
        assert_eq!(json["elements"][0]["action_id"], "centaur_stop");
        assert_eq!(json["elements"][0]["text"]["type"], "plain_text");
        let back = ActionValue::decode(json["elements"][0]["value"].as_str().unwrap()).unwrap();
        assert_eq!(back, value);
        assert!(back.encode().len() < MAX_BUTTON_VALUE);
    }
}
