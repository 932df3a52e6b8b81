"""The slack tool against a fake Slack Web API (tests/fake_slack.py)."""

import json
from pathlib import Path

import pytest
from fake_slack import BOT_TOKEN, USER_TOKEN, FakeSlack

from centaur_tools import ToolError, testing

TOOL_DIR = Path(__file__).parent.parent


def call(method: str, **arguments):
    return testing.call(TOOL_DIR, method, **arguments)


def test_read_thread_in_order_with_names(slack: FakeSlack) -> None:
    thread = call("read_thread", channel="C01GENERAL", ts="1712330000.000100")
    assert [m["text"] for m in thread["messages"]] == [
        "Invoices fail for @bobby's customers",
        "reply 1",
        "reply 2",
        "reply 3",
    ]
    assert thread["messages"][0] == {
        "ts": "1712330000.000100",
        "user": "U01ALICE",
        "user_name": "alice",
        "text": "Invoices fail for @bobby's customers",
        "thread_ts": "1712330000.000100",
        "reply_count": 3,
    }
    assert thread["has_more"] is False
    (replies,) = slack.calls_of("conversations.replies")
    assert replies.http_method == "POST"
    assert replies.content_type == "application/x-www-form-urlencoded"
    assert replies.authorization == f"Bearer {BOT_TOKEN}"
    assert replies.args == {"channel": "C01GENERAL", "ts": "1712330000.000100", "limit": "100"}
    # Each user looked up once per call, however often they appear.
    assert sorted(c.args["user"] for c in slack.calls_of("users.info")) == ["U01ALICE", "U02BOB"]


def test_a_link_timestamp_is_accepted(slack: FakeSlack) -> None:
    thread = call("read_thread", channel="C01GENERAL", ts="p1712330000000100", limit=2)
    assert [m["ts"] for m in thread["messages"]] == ["1712330000.000100", "1712330001.000100"]
    assert thread["has_more"] is True
    with pytest.raises(ToolError, match="not a Slack timestamp"):
        call("read_thread", channel="C01GENERAL", ts="yesterday")


def test_channel_history_follows_cursors_oldest_first(slack: FakeSlack) -> None:
    history = call("channel_history", channel="C03BILLING", limit=230)
    texts = [m["text"] for m in history["messages"]]
    assert len(texts) == 230
    assert texts[0] == "billing message 21" and texts[-1] == "billing message 250"
    assert history["has_more"] is True
    pages = slack.calls_of("conversations.history")
    assert "cursor" not in pages[0].args
    assert pages[1].args["cursor"] and pages[0].args["limit"] == "200"
    assert pages[1].args["limit"] == "30"


def test_channel_history_by_name_and_oldest(slack: FakeSlack) -> None:
    history = call("channel_history", channel="#billing", oldest="1712340247.000100")
    assert [m["text"] for m in history["messages"]] == [
        "billing message 248",
        "billing message 249",
        "billing message 250",
    ]
    # The name was found on the second page of conversations.list.
    listed = slack.calls_of("conversations.list")
    assert len(listed) == 2 and listed[1].args["cursor"]
    assert slack.calls_of("conversations.history")[0].args["oldest"] == "1712340247.000100"
    with pytest.raises(ToolError, match="no channel named #nope"):
        call("channel_history", channel="#nope")


def test_ok_false_becomes_a_tool_error_naming_the_error(slack: FakeSlack) -> None:
    with pytest.raises(ToolError, match="channel_not_found"):
        call("channel_history", channel="C09UNKNOWN")
    with pytest.raises(ToolError, match=r"not_in_channel \(the bot is not a member"):
        call("channel_history", channel="C04SECRET")


def test_a_bad_token_is_named(slack: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-wrong")
    with pytest.raises(ToolError, match="invalid_auth"):
        call("read_thread", channel="C01GENERAL", ts="1712330000.000100")


def test_retry_after_is_honoured_once(slack: FakeSlack) -> None:
    slack.rate_limit["conversations.replies"] = 1
    thread = call("read_thread", channel="C01GENERAL", ts="1712330000.000100")
    assert len(thread["messages"]) == 4
    assert len(slack.calls_of("conversations.replies")) == 2
    slack.rate_limit["conversations.replies"] = 2
    with pytest.raises(ToolError, match=r"rate limiting conversations\.replies: retry after 1 s"):
        call("read_thread", channel="C01GENERAL", ts="1712330000.000100")


def test_search_uses_the_user_token_and_pages(slack: FakeSlack) -> None:
    found = call("search_messages", query="billing message 1", limit=105)
    assert found["total"] == 111  # 1, 10-19, 100-199
    assert len(found["matches"]) == 105
    first = found["matches"][0]
    assert first == {
        "channel": "C03BILLING",
        "channel_name": "billing",
        "ts": "1712340001.000100",
        "user": "U01ALICE",
        "user_name": "alice",
        "text": "billing message 1",
        "permalink": "https://fake.slack.com/archives/C03BILLING/p1712340001000100",
    }
    searches = slack.calls_of("search.messages")
    assert [(c.args["page"], c.args["count"]) for c in searches] == [("1", "100"), ("2", "100")]
    assert all(c.authorization == f"Bearer {USER_TOKEN}" for c in searches)


def test_search_without_a_user_token_says_what_is_missing(
    slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_USER_TOKEN")
    with pytest.raises(ToolError, match="needs a user token"):
        call("search_messages", query="x")
    assert slack.calls_of("search.messages") == []


def test_post_message_sends_json_and_returns_the_permalink(slack: FakeSlack) -> None:
    posted = call(
        "post_message", channel="#general", text="Fixed in #42", thread_ts="1712330000.000100"
    )
    (post,) = slack.calls_of("chat.postMessage")
    assert post.content_type == "application/json; charset=utf-8"
    assert post.authorization == f"Bearer {BOT_TOKEN}"
    assert post.args == {
        "channel": "C01GENERAL",
        "text": "Fixed in #42",
        "thread_ts": "1712330000.000100",
    }
    assert slack.posted[0]["text"] == "Fixed in #42"
    assert posted == {
        "channel": "C01GENERAL",
        "ts": slack.posted[0]["ts"],
        "thread_ts": "1712330000.000100",
        "permalink": "https://fake.slack.com/archives/C01GENERAL/p"
        + slack.posted[0]["ts"].replace(".", ""),
    }
    with pytest.raises(ToolError, match="not_in_channel"):
        call("post_message", channel="C04SECRET", text="hello")
    with pytest.raises(ToolError, match="text is empty"):
        call("post_message", channel="C01GENERAL", text=" ")


def test_post_message_needs_approval_in_the_manifest() -> None:
    import tomllib

    manifest = tomllib.loads((TOOL_DIR / "pyproject.toml").read_text())["tool"]["centaur"]
    assert manifest["approval"] == ["post_message"]
    assert set(manifest["secrets"]) == {"SLACK_BOT_TOKEN", "SLACK_USER_TOKEN"}
    methods = set(testing.describe(TOOL_DIR))
    assert methods == {"read_thread", "channel_history", "search_messages", "post_message"}
    json.dumps(manifest)
