"""A fake of GitHub's REST API (v3) for the routes the tool uses, speaking its wire format:
JSON bodies shaped as GitHub's, `Link` pagination, `{"message", "documentation_url"}` errors,
the rate limit's 403, the diff media type, and a job log's 302 to a second host (GitHub's log
storage) that serves the text only with the signed query and without a token."""

from __future__ import annotations

import base64
import json
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

TOKEN = "ghp_fake_token_for_tests"
DOCS = "https://docs.github.com/rest"
OWNER, NAME = "acme", "shop"
REPO = f"{OWNER}/{NAME}"

DIFF = """diff --git a/billing/invoice.py b/billing/invoice.py
index 83db48f..bf269f4 100644
--- a/billing/invoice.py
+++ b/billing/invoice.py
@@ -1,3 +1,3 @@
 def total(items):
-    return sum(i.price for i in items)
+    return sum(i.price * i.quantity for i in items)
"""

FAILED_LOG = "\n".join(
    [
        "\ufeff2024-05-02T10:00:00.0000000Z ##[group]Run pytest billing",
        "2024-05-02T10:00:01.0000000Z ============ test session starts ============",
        *[f"2024-05-02T10:00:02.0000000Z billing/test_{i}.py::test_ok PASSED" for i in range(150)],
        "2024-05-02T10:00:03.0000000Z billing/test_invoice.py::test_total FAILED",
        "2024-05-02T10:00:03.1000000Z E       AssertionError: assert 30 == 60",
        "2024-05-02T10:00:04.0000000Z ##[error]Process completed with exit code 1.",
    ]
)


@dataclass
class Request:
    host: str  # "api" or "logs"
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw_path: str = ""  # the path as sent, still percent-encoded


@dataclass
class FakeGitHub:
    """Both fake hosts, their data and what they received."""

    api_url: str = ""
    logs_url: str = ""
    requests: list[Request] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    issues: list[dict[str, Any]] = field(default_factory=list)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    pulls: list[dict[str, Any]] = field(default_factory=list)
    workflows: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    logs: dict[int, str] = field(default_factory=dict)
    rate_limited: bool = False
    secondary_limited: bool = False
    servers: list[ThreadingHTTPServer] = field(default_factory=list)

    def api_requests(self, path_prefix: str = "") -> list[Request]:
        return [r for r in self.requests if r.host == "api" and r.path.startswith(path_prefix)]

    def start(self) -> FakeGitHub:
        for host in ("api", "logs"):
            server = _Server(("127.0.0.1", 0), _handler(self, host))
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
            url = f"http://127.0.0.1:{server.server_address[1]}"
            if host == "api":
                self.api_url = url
            else:
                self.logs_url = url
            self.servers.append(server)
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that reads only part of a body (a size limit) closes early: not a failure.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _user(login: str) -> dict[str, Any]:
    return {
        "login": login,
        "id": abs(hash(login)) % 10_000,
        "type": "User",
        "html_url": f"https://github.com/{login}",
    }


def issue(
    number: int,
    title: str,
    *,
    state: str = "open",
    labels: tuple[str, ...] = (),
    pull: bool = False,
    body: str = "",
) -> dict[str, Any]:
    item = {
        "id": 1000 + number,
        "node_id": f"I_{number}",
        "url": f"https://api.github.com/repos/{REPO}/issues/{number}",
        "html_url": f"https://github.com/{REPO}/issues/{number}",
        "number": number,
        "state": state,
        "title": title,
        "body": body,
        "user": _user("alice"),
        "labels": [
            {"id": i, "name": name, "color": "d73a4a", "default": False}
            for i, name in enumerate(labels)
        ],
        "assignees": [_user("bob")],
        "comments": 0,
        "created_at": f"2024-04-{number % 28 + 1:02d}T09:00:00Z",
        "updated_at": "2024-05-01T09:00:00Z",
        "closed_at": None,
        "author_association": "MEMBER",
    }
    if pull:
        item["pull_request"] = {
            "url": f"https://api.github.com/repos/{REPO}/pulls/{number}",
            "html_url": f"https://github.com/{REPO}/pull/{number}",
        }
    return item


def pull(number: int, title: str, *, head: str, state: str = "open") -> dict[str, Any]:
    return {
        "id": 2000 + number,
        "number": number,
        "state": state,
        "locked": False,
        "title": title,
        "body": f"Fixes {title.lower()}",
        "user": _user("carol"),
        "draft": False,
        "head": {"ref": head, "sha": "a" * 40, "label": f"{OWNER}:{head}"},
        "base": {"ref": "main", "sha": "b" * 40, "label": f"{OWNER}:main"},
        "html_url": f"https://github.com/{REPO}/pull/{number}",
        "created_at": "2024-05-01T08:00:00Z",
        "updated_at": "2024-05-01T10:00:00Z",
        "merged": False,
        "merged_at": None,
        "mergeable": True,
        "comments": 2,
        "review_comments": 1,
        "commits": 3,
        "additions": 1,
        "deletions": 1,
        "changed_files": 1,
    }


def run(
    run_id: int, *, workflow_id: int, name: str, branch: str, conclusion: str | None, number: int
) -> dict[str, Any]:
    return {
        "id": run_id,
        "name": name,
        "display_title": f"Commit {number}",
        "node_id": f"WFR_{run_id}",
        "head_branch": branch,
        "head_sha": f"{number:040x}",
        "path": ".github/workflows/billing.yml",
        "run_number": number,
        "run_attempt": 1,
        "event": "push",
        "status": "completed" if conclusion else "in_progress",
        "conclusion": conclusion,
        "workflow_id": workflow_id,
        "html_url": f"https://github.com/{REPO}/actions/runs/{run_id}",
        "created_at": f"2024-05-0{number % 9 + 1}T10:00:00Z",
        "updated_at": f"2024-05-0{number % 9 + 1}T10:05:00Z",
    }


def _handler(fake: FakeGitHub, host: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            fake.requests.append(
                Request(
                    host,
                    "GET",
                    unquote(parts.path),
                    query,
                    {k.lower(): v for k, v in self.headers.items()},
                    parts.path,
                )
            )
            if host == "logs":
                self._logs(parts.path, query)
            else:
                self._api(unquote(parts.path), query)

        # ---- answers ----

        def _send(
            self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-GitHub-Media-Type", "github.v3; format=json")
            self.send_header("X-RateLimit-Limit", "5000")
            self.send_header("X-RateLimit-Remaining", "0" if fake.rate_limited else "4999")
            self.send_header("X-RateLimit-Reset", "1714640000")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(
            self, value: Any, status: int = 200, headers: dict[str, str] | None = None
        ) -> None:
            self._send(
                status, json.dumps(value).encode(), "application/json; charset=utf-8", headers
            )

        def _error(self, status: int, message: str) -> None:
            self._json(
                {"message": message, "documentation_url": DOCS, "status": str(status)}, status
            )

        def _page(
            self,
            items: list[Any],
            query: dict[str, list[str]],
            path: str,
            key: str | None = None,
            total: bool = False,
        ) -> None:
            per_page = min(int(query.get("per_page", ["30"])[0]), 100)
            page = int(query.get("page", ["1"])[0])
            chunk = items[(page - 1) * per_page : page * per_page]
            last = max(1, -(-len(items) // per_page))
            links = []
            flat = {k: v[0] for k, v in query.items()}
            if page < last:
                links.append(
                    f'<{fake.api_url}{path}?{urlencode({**flat, "page": page + 1})}>; rel="next"'
                )
                links.append(
                    f'<{fake.api_url}{path}?{urlencode({**flat, "page": last})}>; rel="last"'
                )
            headers = {"Link": ", ".join(links)} if links else {}
            body: Any = chunk if key is None else {"total_count": len(items), key: chunk}
            self._json(body, headers=headers)

        def _logs(self, path: str, query: dict[str, list[str]]) -> None:
            # GitHub's log storage: a signed URL, no token wanted.
            if "authorization" in {k.lower() for k in self.headers}:
                self._send(
                    400, b"<Error><Code>InvalidAuthenticationInfo</Code></Error>", "application/xml"
                )
                return
            job_id = int(path.rsplit("/", 2)[-2])
            if query.get("sig") != ["signed"] or job_id not in fake.logs:
                self._send(
                    403, b"<Error><Code>AuthenticationFailed</Code></Error>", "application/xml"
                )
                return
            self._send(200, fake.logs[job_id].encode(), "text/plain")

        def _api(self, path: str, query: dict[str, list[str]]) -> None:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._error(401, "Bad credentials")
                return
            if self.headers.get("X-GitHub-Api-Version") != "2022-11-28":
                self._error(400, "Unsupported API version")
                return
            if fake.rate_limited:
                self._json(
                    {
                        "message": "API rate limit exceeded for user ID 1.",
                        "documentation_url": "https://docs.github.com/rest/overview/"
                        "rate-limits-for-the-rest-api",
                    },
                    403,
                )
                return
            if fake.secondary_limited:
                body = {"message": "You have exceeded a secondary rate limit. Please wait a few "
                        "minutes before you try again.", "documentation_url": DOCS}  # fmt: skip
                data = json.dumps(body).encode()
                self._send(403, data, "application/json; charset=utf-8", {"Retry-After": "60"})
                return
            accept = self.headers.get("Accept", "")
            segments = path.strip("/").split("/")
            if segments[0] == "search" and segments[1:] == ["code"]:
                self._search(query, accept)
                return
            if segments[:3] != ["repos", OWNER, NAME]:
                self._error(404, "Not Found")
                return
            rest = segments[3:]
            base = f"/repos/{REPO}"
            if rest[:1] == ["contents"]:
                self._contents("/".join(rest[1:]), query, accept)
            elif rest == ["issues"]:
                state = query.get("state", ["open"])[0]
                labels = set(query.get("labels", [""])[0].split(",")) - {""}
                items = [
                    i
                    for i in fake.issues
                    if state in ("all", i["state"])
                    and labels <= {lbl["name"] for lbl in i["labels"]}
                ]
                self._page(items, query, f"{base}/issues")
            elif rest[:1] == ["issues"] and len(rest) == 2:
                found = [i for i in fake.issues if str(i["number"]) == rest[1]]
                self._json(found[0]) if found else self._error(404, "Not Found")
            elif rest[:1] == ["issues"] and rest[2:] == ["comments"]:
                self._page(fake.comments.get(int(rest[1]), []), query, path)
            elif rest == ["pulls"]:
                state = query.get("state", ["open"])[0]
                self._page(
                    [p for p in fake.pulls if state in ("all", p["state"])], query, f"{base}/pulls"
                )
            elif rest[:1] == ["pulls"] and len(rest) == 2:
                found = [p for p in fake.pulls if str(p["number"]) == rest[1]]
                if not found:
                    self._error(404, "Not Found")
                elif accept == "application/vnd.github.diff":
                    self._send(200, DIFF.encode(), "application/vnd.github.diff; charset=utf-8")
                else:
                    self._json(found[0])
            elif rest[:1] == ["pulls"] and rest[2:] == ["files"]:
                self._page(
                    [
                        {
                            "sha": "c" * 40,
                            "filename": "billing/invoice.py",
                            "status": "modified",
                            "additions": 1,
                            "deletions": 1,
                            "changes": 2,
                            "patch": "@@ -1,3 +1,3 @@",
                        }
                    ],
                    query,
                    path,
                )
            elif rest == ["actions", "workflows"]:
                self._page(fake.workflows, query, path, key="workflows")
            elif rest == ["actions", "runs"]:
                self._runs(fake.runs, query, path)
            elif rest[:2] == ["actions", "workflows"] and rest[3:] == ["runs"]:
                ref = rest[2]
                ids = {
                    w["id"]
                    for w in fake.workflows
                    if str(w["id"]) == ref or w["path"].endswith("/" + ref)
                }
                if not ids:
                    self._error(404, "Not Found")
                    return
                self._runs([r for r in fake.runs if r["workflow_id"] in ids], query, path)
            elif rest[:2] == ["actions", "runs"] and rest[3:] == ["jobs"]:
                jobs = fake.jobs.get(int(rest[2]))
                if jobs is None:
                    self._error(404, "Not Found")
                    return
                self._page(jobs, query, path, key="jobs")
            elif rest[:2] == ["actions", "jobs"] and rest[3:] == ["logs"]:
                job_id = int(rest[2])
                if job_id not in fake.logs:
                    self._error(404, "Not Found")
                    return
                location = (
                    f"{fake.logs_url}/actions-results/run/jobs/{job_id}/logs.txt"
                    "?sv=2021-12-02&se=2024-05-02T10%3A10%3A00Z&sig=signed"
                )
                self._send(302, b"", "text/html", {"Location": location})
            else:
                self._error(404, "Not Found")

        def _runs(self, runs: list[dict[str, Any]], query: dict[str, list[str]], path: str) -> None:
            branch = query.get("branch", [None])[0]
            status = query.get("status", [None])[0]
            items = [
                r
                for r in runs
                if (branch is None or r["head_branch"] == branch)
                and (status is None or status in (r["status"], r["conclusion"]))
            ]
            items.sort(key=lambda r: -r["run_number"])
            self._page(items, query, path, key="workflow_runs")

        def _contents(self, path: str, query: dict[str, list[str]], accept: str) -> None:
            ref = query.get("ref", ["main"])[0]
            key = f"{ref}:{path}"
            if key in fake.files:
                data = fake.files[key]
                if accept == "application/vnd.github.raw+json":
                    self._send(200, data, "application/vnd.github.raw")
                    return
                big = len(data) > 1_000_000
                encoded = base64.encodebytes(data).decode()
                self._json(
                    {
                        "type": "file",
                        "encoding": "none" if big else "base64",
                        "size": len(data),
                        "name": path.rsplit("/", 1)[-1],
                        "path": path,
                        "content": "" if big else encoded,
                        "sha": "d" * 40,
                        "url": f"{fake.api_url}/repos/{REPO}/contents/{path}?ref={ref}",
                        "html_url": f"https://github.com/{REPO}/blob/{ref}/{path}",
                        "download_url": f"https://raw.githubusercontent.com/{REPO}/{ref}/{path}",
                    }
                )
                return
            prefix = f"{ref}:{path}/" if path else f"{ref}:"
            children: dict[str, dict[str, Any]] = {}
            for name, data in fake.files.items():
                if not name.startswith(prefix):
                    continue
                child = name[len(prefix) :].split("/", 1)
                full = f"{path}/{child[0]}" if path else child[0]
                children[child[0]] = {
                    "type": "dir" if len(child) > 1 else "file",
                    "name": child[0],
                    "path": full,
                    "size": 0 if len(child) > 1 else len(data),
                    "sha": "e" * 40,
                }
            if not children:
                self._error(404, "Not Found")
                return
            self._json(sorted(children.values(), key=lambda c: c["name"]))

        def _search(self, query: dict[str, list[str]], accept: str) -> None:
            q = query.get("q", [""])[0]
            words = [w for w in q.split() if ":" not in w]
            repo = next((w[5:] for w in q.split() if w.startswith("repo:")), None)
            items = []
            for key, data in fake.files.items():
                ref, path = key.split(":", 1)
                text = data.decode(errors="replace")
                if ref != "main" or (repo and repo != REPO):
                    continue
                if not all(w in text for w in words):
                    continue
                item = {
                    "name": path.rsplit("/", 1)[-1],
                    "path": path,
                    "sha": "d" * 40,
                    "url": f"{fake.api_url}/repos/{REPO}/contents/{path}",
                    "html_url": f"https://github.com/{REPO}/blob/main/{path}",
                    "repository": {
                        "id": 1,
                        "name": NAME,
                        "full_name": REPO,
                        "owner": _user(OWNER),
                        "private": True,
                    },
                    "score": 1.0,
                }
                if accept == "application/vnd.github.text-match+json":
                    line = next(li for li in text.splitlines() if words[0] in li)
                    item["text_matches"] = [
                        {
                            "object_type": "FileContent",
                            "property": "content",
                            "fragment": line,
                            "matches": [],
                        }
                    ]
                items.append(item)
            per_page = int(query.get("per_page", ["30"])[0])
            self._json(
                {"total_count": len(items), "incomplete_results": False, "items": items[:per_page]}
            )

    return Handler
