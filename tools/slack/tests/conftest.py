import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_slack import BOT_TOKEN, USER_TOKEN, FakeSlack

TOOL_DIR = Path(__file__).parent.parent


def user(uid: str, name: str, display: str) -> dict:
    return {
        "id": uid,
        "team_id": "T0FAKE01",
        "name": name,
        "real_name": display.title(),
        "is_bot": False,
        "profile": {"display_name": display, "real_name": display.title()},
    }


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    fake.users = {
        "U01ALICE": user("U01ALICE", "alice", "alice"),
        "U02BOB": user("U02BOB", "bob", "bobby"),
    }
    fake.channels = {
        "C01GENERAL": {"id": "C01GENERAL", "name": "general"},
        "C02RANDOM": {"id": "C02RANDOM", "name": "random"},
        "C03BILLING": {"id": "C03BILLING", "name": "billing"},
        "C04SECRET": {"id": "C04SECRET", "name": "secret", "is_member": False},
    }
    fake.history = {
        "C03BILLING": [
            {
                "type": "message",
                "user": "U01ALICE" if i % 2 else "U02BOB",
                "text": f"billing message {i}",
                "ts": f"{1712340000 + i}.000100",
                "team": "T0FAKE01",
            }
            for i in range(1, 251)
        ],
        "C01GENERAL": [
            {
                "type": "message",
                "user": "U01ALICE",
                "ts": "1712330000.000100",
                "text": "Invoices fail for <@U02BOB>'s customers",
                "reply_count": 3,
                "thread_ts": "1712330000.000100",
                "team": "T0FAKE01",
            }
        ],
    }
    fake.replies = {
        ("C01GENERAL", "1712330000.000100"): [
            {
                "type": "message",
                "user": "U02BOB",
                "text": f"reply {i}",
                "ts": f"171233000{i}.000100",
                "thread_ts": "1712330000.000100",
            }
            for i in range(1, 4)
        ]
    }
    monkeypatch.setenv("SLACK_API_URL", fake.url)
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_USER_TOKEN", USER_TOKEN)
    yield fake
    fake.stop()
