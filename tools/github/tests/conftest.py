import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_github import (
    FAILED_LOG,
    TOKEN,
    FakeGitHub,
    issue,
    pull,
    run,
)

TOOL_DIR = Path(__file__).parent.parent


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    fake = FakeGitHub().start()
    fake.files = {
        "main:README.md": b"# Shop\n",
        "main:billing/invoice.py": b"def total(items):\n    return sum(i.price for i in items)\n",
        "main:billing/logo.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        "main:billing/big.txt": b"x" * 1_200_000,
        "v1:billing/invoice.py": b"def total(items):\n    return 0\n",
    }
    fake.issues = [
        issue(
            n,
            f"Issue {n}",
            labels=("bug", "billing") if n % 2 else ("docs",),
            state="closed" if n % 5 == 0 else "open",
            pull=(n % 7 == 0),
            body=f"Body of {n}",
        )
        for n in range(1, 251)
    ]
    fake.comments = {
        3: [
            {
                "id": 1,
                "user": {"login": "dave"},
                "body": "I see it too",
                "created_at": "2024-05-01T11:00:00Z",
                "updated_at": "2024-05-01T11:00:00Z",
                "html_url": "https://github.com/acme/shop/issues/3#issuecomment-1",
            }
        ]
    }
    fake.pulls = [
        pull(42, "Fix invoice totals", head="fix-totals"),
        pull(41, "Old thing", head="old", state="closed"),
    ]
    fake.workflows = [
        {
            "id": 11,
            "node_id": "W_11",
            "name": "CI",
            "path": ".github/workflows/ci.yml",
            "state": "active",
        },
        {
            "id": 12,
            "node_id": "W_12",
            "name": "Billing tests",
            "path": ".github/workflows/billing.yml",
            "state": "active",
        },
    ]
    fake.runs = [
        run(
            900, workflow_id=12, name="Billing tests", branch="main", conclusion="success", number=7
        ),
        run(
            901, workflow_id=12, name="Billing tests", branch="main", conclusion="failure", number=8
        ),
        run(902, workflow_id=11, name="CI", branch="main", conclusion="success", number=9),
        run(
            903,
            workflow_id=12,
            name="Billing tests",
            branch="feature",
            conclusion="success",
            number=10,
        ),
    ]
    fake.jobs = {
        901: [
            {
                "id": 5001,
                "run_id": 901,
                "name": "unit",
                "status": "completed",
                "conclusion": "success",
                "html_url": "https://github.com/acme/shop/actions/runs/901/job/5001",
                "started_at": "2024-05-02T10:00:00Z",
                "completed_at": "2024-05-02T10:01:00Z",
                "steps": [
                    {
                        "name": "Run tests",
                        "status": "completed",
                        "conclusion": "success",
                        "number": 1,
                    }
                ],
            },
            {
                "id": 5002,
                "run_id": 901,
                "name": "billing",
                "status": "completed",
                "conclusion": "failure",
                "html_url": "https://github.com/acme/shop/actions/runs/901/job/5002",
                "started_at": "2024-05-02T10:00:00Z",
                "completed_at": "2024-05-02T10:04:00Z",
                "steps": [
                    {
                        "name": "Set up job",
                        "status": "completed",
                        "conclusion": "success",
                        "number": 1,
                    },
                    {
                        "name": "Run pytest billing",
                        "status": "completed",
                        "conclusion": "failure",
                        "number": 2,
                    },
                    {"name": "Post", "status": "completed", "conclusion": "skipped", "number": 3},
                ],
            },
        ]
    }
    fake.logs = {5002: FAILED_LOG, 5001: "all good\n"}
    monkeypatch.setenv("GITHUB_API_URL", fake.api_url)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    yield fake
    fake.stop()
