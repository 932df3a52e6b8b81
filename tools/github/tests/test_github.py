"""The github tool against a fake GitHub REST API (tests/fake_github.py)."""

from pathlib import Path

import pytest
from fake_github import DIFF, REPO, TOKEN, FakeGitHub, run

from centaur_tools import ToolError, testing

TOOL_DIR = Path(__file__).parent.parent


def call(method: str, **arguments):
    return testing.call(TOOL_DIR, method, **arguments)


def test_every_request_carries_the_token_and_api_headers(github: FakeGitHub) -> None:
    call("get_file", repo=REPO, path="README.md")
    (request,) = github.api_requests()
    assert request.path == "/repos/acme/shop/contents/README.md"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["accept"] == "application/vnd.github+json"
    assert request.headers["x-github-api-version"] == "2022-11-28"
    assert request.headers["user-agent"].startswith("centaur-tool-github")


def test_get_file_decodes_base64_and_honours_ref(github: FakeGitHub) -> None:
    main = call("get_file", repo=REPO, path="billing/invoice.py")
    assert main["type"] == "file"
    assert main["text"] == "def total(items):\n    return sum(i.price for i in items)\n"
    assert main["truncated"] is False
    old = call("get_file", repo=REPO, path="/billing/invoice.py", ref="v1")
    assert old["text"] == "def total(items):\n    return 0\n"
    assert github.api_requests()[-1].query == {"ref": ["v1"]}


def test_get_file_limits_size_and_describes_binaries(github: FakeGitHub) -> None:
    cut = call("get_file", repo=REPO, path="billing/invoice.py", max_bytes=10)
    assert cut == {**cut, "text": "def total(", "truncated": True}
    png = call("get_file", repo=REPO, path="billing/logo.png")
    assert png["binary"] is True and png["text"] is None
    # Over 1 MB the contents API sends no content; the raw media type gives the bytes.
    big = call("get_file", repo=REPO, path="billing/big.txt", max_bytes=1000)
    assert big["text"] == "x" * 1000 and big["truncated"] is True
    assert github.api_requests()[-1].headers["accept"] == "application/vnd.github.raw+json"


def test_get_file_lists_a_directory(github: FakeGitHub) -> None:
    listing = call("get_file", repo=REPO, path="billing")
    assert listing["type"] == "dir"
    assert [(e["name"], e["type"]) for e in listing["entries"]] == [
        ("big.txt", "file"),
        ("invoice.py", "file"),
        ("logo.png", "file"),
    ]
    root = call("get_file", repo=REPO, path="")
    assert {e["name"]: e["type"] for e in root["entries"]} == {
        "README.md": "file",
        "billing": "dir",
    }


def test_not_found_is_a_clear_tool_error(github: FakeGitHub) -> None:
    with pytest.raises(ToolError, match=r"nope\.py in acme/shop was not found on GitHub \(404\)"):
        call("get_file", repo=REPO, path="nope.py")
    with pytest.raises(ToolError, match="not found"):
        call("get_issue", repo="acme/other", number=1)
    with pytest.raises(ToolError, match='repo must be "owner/name"'):
        call("list_issues", repo="acme")


@pytest.mark.parametrize(
    ("repo", "path"),
    [
        ("acme/shop", "../../../user"),
        ("acme/shop", "billing/../../other/contents"),
        ("acme/shop", "./README.md"),
        ("acme/shop", "billing//invoice.py"),
        ("acme/..", "README.md"),
        ("../acme/shop", "README.md"),
        ("./shop", "README.md"),
    ],
)
def test_a_path_or_repo_cannot_leave_its_api_route(
    github: FakeGitHub, repo: str, path: str
) -> None:
    with pytest.raises(ToolError, match="must be"):
        call("get_file", repo=repo, path=path)
    assert github.api_requests() == []


def test_every_part_of_a_repo_or_path_is_quoted_whole(github: FakeGitHub) -> None:
    with pytest.raises(ToolError, match="not found"):
        call("get_file", repo="acme/shop?x=1#", path="what?.md")
    with pytest.raises(ToolError, match="not found"):
        call("get_file", repo=REPO, path="billing/%2e%2e/%2fsecret")
    with pytest.raises(ToolError, match="not found"):
        call("list_issues", repo="acme%2fshop/x")
    assert [r.raw_path for r in github.api_requests()] == [
        "/repos/acme/shop%3Fx%3D1%23/contents/what%3F.md",
        "/repos/acme/shop/contents/billing/%252e%252e/%252fsecret",
        "/repos/acme%252fshop/x/issues",
    ]


def test_bad_token_and_rate_limit(github: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "wrong")
    with pytest.raises(ToolError, match=r"refused the token \(401 Bad credentials\)"):
        call("list_issues", repo=REPO)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    github.rate_limited = True
    with pytest.raises(ToolError, match=r"rate limit is used up .*API rate limit exceeded"):
        call("list_issues", repo=REPO)
    github.rate_limited = False
    github.secondary_limited = True
    with pytest.raises(ToolError, match=r"secondary rate limit.*retry after 60 s"):
        call("search_code", query="price")


def test_search_code_scopes_to_the_repo_and_returns_fragments(github: FakeGitHub) -> None:
    found = call("search_code", query="price", repo=REPO)
    assert found["query"] == "price repo:acme/shop"
    assert found["items"] == [
        {
            "repository": REPO,
            "path": "billing/invoice.py",
            "html_url": "https://github.com/acme/shop/blob/main/billing/invoice.py",
            "fragments": ["    return sum(i.price for i in items)"],
        }
    ]
    request = github.api_requests("/search/code")[-1]
    assert request.query["q"] == ["price repo:acme/shop"]
    assert request.headers["accept"] == "application/vnd.github.text-match+json"


def test_list_issues_pages_through_link_headers_and_drops_pull_requests(
    github: FakeGitHub,
) -> None:
    issues = call("list_issues", repo=REPO, state="all", limit=110)
    assert len(issues) == 110
    assert all(i["number"] % 7 != 0 for i in issues)
    pages = github.api_requests("/repos/acme/shop/issues")
    assert [r.query.get("page") for r in pages] == [None, ["2"]]
    assert pages[0].query["per_page"] == ["100"] and pages[0].query["state"] == ["all"]
    assert issues[0] == {
        "number": 1,
        "title": "Issue 1",
        "state": "open",
        "user": "alice",
        "labels": ["bug", "billing"],
        "assignees": ["bob"],
        "comments": 0,
        "created_at": "2024-04-02T09:00:00Z",
        "updated_at": "2024-05-01T09:00:00Z",
        "html_url": "https://github.com/acme/shop/issues/1",
    }


def test_list_issues_filters_by_state_and_labels(github: FakeGitHub) -> None:
    issues = call("list_issues", repo=REPO, labels=["bug", "billing"], limit=5)
    assert [i["number"] for i in issues] == [1, 3, 9, 11, 13]
    assert github.api_requests()[-1].query["labels"] == ["bug,billing"]
    with pytest.raises(testing.ArgumentError, match="state"):
        call("list_issues", repo=REPO, state="opened")


def test_get_issue_with_comments(github: FakeGitHub) -> None:
    got = call("get_issue", repo=REPO, number=3)
    assert got["title"] == "Issue 3" and got["body"] == "Body of 3"
    assert got["is_pull_request"] is False
    assert got["comments"] == [
        {"user": "dave", "created_at": "2024-05-01T11:00:00Z", "body": "I see it too"}
    ]


def test_pull_requests_and_their_diff(github: FakeGitHub) -> None:
    pulls = call("list_pull_requests", repo=REPO)
    assert [(p["number"], p["head"], p["base"]) for p in pulls] == [(42, "fix-totals", "main")]
    got = call("get_pull_request", repo=REPO, number=42)
    assert got["additions"] == 1 and got["mergeable"] is True
    assert got["files"] == [
        {"filename": "billing/invoice.py", "status": "modified", "additions": 1, "deletions": 1}
    ]
    diff = call("get_pull_request_diff", repo=REPO, number=42)
    assert diff == {"repo": REPO, "number": 42, "truncated": False, "diff": DIFF}
    assert github.api_requests()[-1].headers["accept"] == "application/vnd.github.diff"
    cut = call("get_pull_request_diff", repo=REPO, number=42, max_bytes=20)
    assert cut["diff"] == DIFF[:20] and cut["truncated"] is True


def test_list_workflow_runs_filters(github: FakeGitHub) -> None:
    runs = call("list_workflow_runs", repo=REPO, branch="main")
    assert [r["id"] for r in runs] == [902, 901, 900]
    failed = call("list_workflow_runs", repo=REPO, status="failure")
    assert [r["id"] for r in failed] == [901]
    # A workflow by its display name is found through the workflows list.
    billing = call("list_workflow_runs", repo=REPO, workflow="billing tests", limit=2)
    assert [r["id"] for r in billing] == [903, 901]
    assert github.api_requests()[-1].path == "/repos/acme/shop/actions/workflows/12/runs"
    by_file = call("list_workflow_runs", repo=REPO, workflow="ci.yml")
    assert [r["id"] for r in by_file] == [902]
    with pytest.raises(ToolError, match="no workflow of acme/shop is named like 'deploy'"):
        call("list_workflow_runs", repo=REPO, workflow="deploy")


def test_failed_jobs_follow_the_log_redirect_without_the_token(github: FakeGitHub) -> None:
    jobs = call("failed_jobs", repo=REPO, run_id=901, log_lines=3)
    (job,) = jobs
    assert job["name"] == "billing" and job["conclusion"] == "failure"
    assert job["failed_steps"] == [
        {"number": 2, "name": "Run pytest billing", "conclusion": "failure"}
    ]
    assert job["log_tail"] == [
        "billing/test_invoice.py::test_total FAILED",
        "E       AssertionError: assert 30 == 60",
        "##[error]Process completed with exit code 1.",
    ]
    assert job["error_lines"] == job["log_tail"]
    (log,) = [r for r in github.requests if r.host == "logs"]
    assert "authorization" not in log.headers
    assert log.path == "/actions-results/run/jobs/5002/logs.txt"
    assert github.api_requests()[-1].path == "/repos/acme/shop/actions/jobs/5002/logs"
    jobs_request = github.api_requests("/repos/acme/shop/actions/runs/901/jobs")[0]
    assert jobs_request.query["filter"] == ["latest"]


def test_a_missing_log_is_reported_in_the_job_not_raised(github: FakeGitHub) -> None:
    del github.logs[5002]
    (job,) = call("failed_jobs", repo=REPO, run_id=901)
    assert "not found" in job["log_error"]
    assert job["failed_steps"][0]["name"] == "Run pytest billing"


def test_why_failing_names_the_run_job_step_and_error(github: FakeGitHub) -> None:
    answer = call("why_failing", repo=REPO, branch="main", workflow="billing")
    assert answer["failing"] is True
    assert answer["run"]["id"] == 901
    assert answer["failed_jobs"][0]["name"] == "billing"
    assert "Job 'billing' failure at 'Run pytest billing'" in answer["summary"]
    assert "first error: billing/test_invoice.py::test_total FAILED" in answer["summary"]
    # Nothing failed on the feature branch.
    quiet = call("why_failing", repo=REPO, branch="feature")
    assert quiet["failing"] is False and quiet["latest_run"]["id"] == 903


def test_why_failing_compares_with_the_same_workflow_on_the_branch(github: FakeGitHub) -> None:
    # CI (another workflow) passed after the billing failure: billing still fails.
    answer = call("why_failing", repo=REPO, branch="main")
    assert answer["run"]["id"] == 901 and answer["latest_run"]["id"] == 901
    assert answer["failing"] is True
    assert github.api_requests()[-1].path == "/repos/acme/shop/actions/jobs/5002/logs"
    # A later billing run on main passed: said, and not failing any more.
    github.runs.append(
        run(
            904,
            workflow_id=12,
            name="Billing tests",
            branch="main",
            conclusion="success",
            number=11,
        )
    )
    answer = call("why_failing", repo=REPO, branch="main")
    assert answer["run"]["id"] == 901 and answer["latest_run"]["id"] == 904
    assert answer["failing"] is False
    assert "A later run (#11) succeeded, so this may be fixed already" in answer["summary"]


def test_methods_are_described_for_the_agent() -> None:
    methods = testing.describe(TOOL_DIR)
    assert set(methods) == {
        "get_file",
        "search_code",
        "list_issues",
        "get_issue",
        "list_pull_requests",
        "get_pull_request",
        "get_pull_request_diff",
        "list_workflow_runs",
        "failed_jobs",
        "why_failing",
    }
    params = methods["list_issues"]["parameters"]
    assert params["required"] == ["repo"]
    assert "owner/name" in params["properties"]["repo"]["description"]
