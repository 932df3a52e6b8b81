"""GitHub: repository files and code search, issues, pull requests and their diffs, and CI runs
with their failed jobs' logs, over the REST API (v3).

The token never reaches this process: `GITHUB_TOKEN` holds a placeholder that the egress proxy
swaps for the real token on api.github.com.
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from centaur_tools import Tool, ToolError, context, http

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
USER_AGENT = "centaur-tool-github"
JSON = "application/vnd.github+json"
State = Literal["open", "closed", "all"]
# What a line of a CI log looks like when it says what went wrong.
ERROR_LINE = re.compile(
    r"##\[error\]|\berror\b|\bERROR\b|\bFAIL(ED|URE)?\b|\bfailed\b|panicked at|Traceback|"
    r"Exception\b|AssertionError|assert(ion)? failed|exit code [1-9]|exited with",
    re.IGNORECASE,
)
LOG_TIMESTAMP = re.compile(r"^\ufeff?\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z ")
FAILED = ("failure", "timed_out")
# The most read of one answer (a file, a diff, a log); what is returned is cut shorter.
DOWNLOAD_CAP = 20_000_000


class GitHub(Tool):
    """Reads GitHub: files, code search, issues, pull requests, Actions runs and their logs."""

    # ---- repository contents ----

    def get_file(
        self, repo: str, path: str, ref: str | None = None, max_bytes: int = 200_000
    ) -> dict[str, Any]:
        """Reads a file of a repository, or lists a directory.

        A file comes back decoded as text (cut at `max_bytes`, with `truncated` set); a binary
        file is described, not dumped. A directory comes back as its entries.

        Args:
            repo: The repository as "owner/name", e.g. "octocat/hello-world".
            path: The path inside the repository, e.g. "src/billing/invoice.py"; "" for the root.
            ref: A branch, tag or commit SHA; the default branch when omitted.
            max_bytes: At most this many bytes of the file's text are returned.
        """
        owner_name = _repo(repo)
        path = path.strip("/")
        params = {"ref": ref} if ref else None
        url = f"{_api()}/repos/{owner_name}/contents/{_path(path)}"
        body = _get_json(url, params=params, what=f"{path or '/'} in {repo}")
        if isinstance(body, list):
            entries = [
                {
                    "name": e.get("name"),
                    "path": e.get("path"),
                    "type": e.get("type"),
                    "size": e.get("size"),
                }
                for e in body
            ]
            return {"type": "dir", "repo": repo, "path": path, "ref": ref, "entries": entries}
        kind = body.get("type")
        base = {
            "type": kind,
            "repo": repo,
            "path": body.get("path", path),
            "ref": ref,
            "sha": body.get("sha"),
            "size": body.get("size"),
            "html_url": body.get("html_url"),
        }
        if kind == "symlink":
            return {**base, "target": body.get("target")}
        if kind == "submodule":
            return {**base, "submodule_git_url": body.get("submodule_git_url")}
        if body.get("encoding") == "base64":
            data = base64.b64decode(body.get("content") or "")
        else:
            # Files over 1 MB come without content: ask for the raw bytes instead.
            response = _request(
                url,
                params=params,
                accept="application/vnd.github.raw+json",
                max_bytes=DOWNLOAD_CAP,
                what=f"{path} in {repo}",
            )
            data = response.body
        truncated = len(data) > max_bytes
        data = data[:max_bytes]
        if b"\x00" in data[:8192]:
            return {**base, "binary": True, "text": None, "truncated": False}
        return {**base, "text": data.decode("utf-8", errors="replace"), "truncated": truncated}

    def search_code(self, query: str, repo: str | None = None, limit: int = 20) -> dict[str, Any]:
        """Searches code with GitHub's code search.

        Args:
            query: Search terms and qualifiers, e.g. "def charge language:python" or
                "InvoiceError path:billing".
            repo: Only this repository ("owner/name").
            limit: At most this many results (1-100).
        """
        q = query.strip()
        if not q:
            raise ToolError("query is empty: give the words or code to look for")
        if repo:
            q = f"{q} repo:{_repo(repo)}"
        limit = _limit(limit, 100)
        response = _request(
            f"{_api()}/search/code",
            params={"q": q, "per_page": limit},
            accept="application/vnd.github.text-match+json",
            what="code search",
        )
        body = response.json()
        items = []
        for item in body.get("items", [])[:limit]:
            items.append(
                {
                    "repository": (item.get("repository") or {}).get("full_name"),
                    "path": item.get("path"),
                    "html_url": item.get("html_url"),
                    "fragments": [m.get("fragment") for m in item.get("text_matches") or []],
                }
            )
        return {
            "query": q,
            "total_count": body.get("total_count"),
            "incomplete_results": body.get("incomplete_results"),
            "items": items,
        }

    # ---- issues ----

    def list_issues(
        self, repo: str, state: State = "open", labels: list[str] | None = None, limit: int = 30
    ) -> list[dict[str, Any]]:
        """Lists a repository's issues (pull requests left out), most recently created first.

        Args:
            repo: The repository as "owner/name".
            state: "open", "closed" or "all".
            labels: Only issues carrying every one of these labels, e.g. ["bug", "billing"].
            limit: At most this many issues (1-500).
        """
        params: dict[str, Any] = {"state": state}
        if labels:
            params["labels"] = ",".join(labels)
        issues = _paginate(
            f"{_api()}/repos/{_repo(repo)}/issues",
            params,
            _limit(limit, 500),
            what=f"issues of {repo}",
            keep=lambda i: "pull_request" not in i,
        )
        return [_issue_summary(i) for i in issues]

    def get_issue(self, repo: str, number: int) -> dict[str, Any]:
        """Reads an issue (or a pull request's conversation) with its comments.

        Args:
            repo: The repository as "owner/name".
            number: The issue number.
        """
        base = f"{_api()}/repos/{_repo(repo)}/issues/{int(number)}"
        issue = _get_json(base, what=f"issue #{number} of {repo}")
        comments = _paginate(f"{base}/comments", {}, 200, what=f"comments of #{number}")
        return {
            **_issue_summary(issue),
            "body": issue.get("body") or "",
            "closed_at": issue.get("closed_at"),
            "is_pull_request": "pull_request" in issue,
            "comments": [
                {"user": _login(c), "created_at": c.get("created_at"), "body": c.get("body") or ""}
                for c in comments
            ],
        }

    # ---- pull requests ----

    def list_pull_requests(
        self, repo: str, state: State = "open", limit: int = 30
    ) -> list[dict[str, Any]]:
        """Lists a repository's pull requests, most recently created first.

        Args:
            repo: The repository as "owner/name".
            state: "open", "closed" or "all".
            limit: At most this many pull requests (1-500).
        """
        pulls = _paginate(
            f"{_api()}/repos/{_repo(repo)}/pulls",
            {"state": state},
            _limit(limit, 500),
            what=f"pull requests of {repo}",
        )
        return [_pull_summary(p) for p in pulls]

    def get_pull_request(self, repo: str, number: int) -> dict[str, Any]:
        """Reads a pull request: its description, branches, state, size and changed files.

        Args:
            repo: The repository as "owner/name".
            number: The pull request number.
        """
        base = f"{_api()}/repos/{_repo(repo)}/pulls/{int(number)}"
        pull = _get_json(base, what=f"pull request #{number} of {repo}")
        files = _paginate(f"{base}/files", {}, 300, what=f"files of #{number}")
        return {
            **_pull_summary(pull),
            "body": pull.get("body") or "",
            "merged": pull.get("merged"),
            "merged_at": pull.get("merged_at"),
            "mergeable": pull.get("mergeable"),
            "commits": pull.get("commits"),
            "additions": pull.get("additions"),
            "deletions": pull.get("deletions"),
            "changed_files": pull.get("changed_files"),
            "comments": pull.get("comments"),
            "review_comments": pull.get("review_comments"),
            "files": [
                {
                    "filename": f.get("filename"),
                    "status": f.get("status"),
                    "additions": f.get("additions"),
                    "deletions": f.get("deletions"),
                }
                for f in files
            ],
        }

    def get_pull_request_diff(
        self, repo: str, number: int, max_bytes: int = 300_000
    ) -> dict[str, Any]:
        """Reads a pull request's unified diff.

        Args:
            repo: The repository as "owner/name".
            number: The pull request number.
            max_bytes: At most this many bytes of the diff are returned (`truncated` says so).
        """
        if max_bytes < 1:
            raise ToolError("max_bytes must be at least 1")
        response = _request(
            f"{_api()}/repos/{_repo(repo)}/pulls/{int(number)}",
            accept="application/vnd.github.diff",
            max_bytes=DOWNLOAD_CAP,
            what=f"pull request #{number} of {repo}",
        )
        data = response.body
        return {
            "repo": repo,
            "number": int(number),
            "truncated": len(data) > max_bytes,
            "diff": data[:max_bytes].decode("utf-8", errors="replace"),
        }

    # ---- Actions ----

    def list_workflow_runs(
        self,
        repo: str,
        branch: str | None = None,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 20,
    ) -> list[dict[str, Any]]:
        """Lists GitHub Actions workflow runs, newest first.

        Args:
            repo: The repository as "owner/name".
            branch: Only runs of this branch, e.g. "main".
            status: Only runs with this status or conclusion: "queued", "in_progress",
                "completed", "success", "failure", "cancelled", "timed_out", ...
            workflow: Only runs of this workflow: its file name ("ci.yml"), its id, or its
                name as shown on GitHub ("Billing tests").
            limit: At most this many runs (1-200).
        """
        return [_run_summary(r) for r in _runs(repo, branch, status, workflow, limit)]

    def failed_jobs(self, repo: str, run_id: int, log_lines: int = 80) -> list[dict[str, Any]]:
        """The failed jobs of a workflow run: their failed steps, the lines of their logs that
        look like errors, and the tail of each log.

        Args:
            repo: The repository as "owner/name".
            run_id: The workflow run's id (from list_workflow_runs).
            log_lines: How many lines of each failed job's log to return, from its end.
        """
        jobs = _paginate(
            f"{_api()}/repos/{_repo(repo)}/actions/runs/{int(run_id)}/jobs",
            {"filter": "latest"},
            300,
            what=f"jobs of run {run_id}",
            key="jobs",
        )
        failed = [j for j in jobs if j.get("conclusion") in FAILED]
        return [_failed_job(repo, job, max(1, min(log_lines, 2000))) for job in failed]

    def why_failing(
        self, repo: str, branch: str | None = None, workflow: str | None = None
    ) -> dict[str, Any]:
        """Explains why CI is failing: the latest failed run (on a branch, of a workflow), its
        failed jobs and steps, and the error lines of their logs. Use it for questions like
        "why are the billing tests failing?" (workflow="billing" or the workflow's file name).

        Args:
            repo: The repository as "owner/name".
            branch: The branch to look at, e.g. "main"; every branch when omitted.
            workflow: A workflow's file name ("billing.yml"), id, or name ("Billing tests").
        """
        failures = _runs(repo, branch, "failure", workflow, 1)
        if not failures:
            latest = _runs(repo, branch, None, workflow, 1)
            scope = "".join(
                (
                    f" on {branch}" if branch else "",
                    f" of workflow {workflow!r}" if workflow else "",
                )
            )
            return {
                "failing": False,
                "summary": f"No failed run{scope} in {repo}.",
                "latest_run": _run_summary(latest[0]) if latest else None,
            }
        run = failures[0]
        # Whether it still fails: the latest run of the same workflow on the same branch.
        same = str(run.get("workflow_id") or workflow or "") or None
        latest = _runs(repo, branch or run.get("head_branch"), None, same, 1)
        jobs = self.failed_jobs(repo, run["id"])
        fixed = (
            bool(latest)
            and latest[0]["id"] != run["id"]
            and latest[0].get("conclusion") == "success"
        )
        lines = [
            f"Run #{run.get('run_number')} of {run.get('name')!r} on "
            f"{run.get('head_branch')} ({(run.get('head_sha') or '')[:7]}) failed "
            f"({run.get('html_url')})."
        ]
        for job in jobs:
            steps = ", ".join(repr(s["name"]) for s in job["failed_steps"]) or "no step named"
            first = job["error_lines"][0] if job["error_lines"] else None
            lines.append(
                f"Job {job['name']!r} {job['conclusion']} at {steps}"
                + (f"; first error: {first}" if first else "")
            )
        if fixed:
            lines.append(
                f"A later run (#{latest[0].get('run_number')}) succeeded, so this may "
                "be fixed already."
            )
        return {
            "failing": not fixed,
            "summary": "\n".join(lines),
            "run": _run_summary(run),
            "latest_run": _run_summary(latest[0]) if latest else None,
            "failed_jobs": jobs,
        }


# ---- requests ----


def _api() -> str:
    return str(context().setting("GITHUB_API_URL", DEFAULT_API_URL) or DEFAULT_API_URL).rstrip("/")


def _headers(accept: str) -> dict[str, str]:
    token = context().secret("GITHUB_TOKEN")
    return {
        "Accept": accept,
        "Authorization": f"Bearer {token}",
        "X-GitHub-Api-Version": API_VERSION,
        "User-Agent": USER_AGENT,
    }


def _request(
    url: str,
    *,
    params: dict[str, Any] | None = None,
    accept: str = JSON,
    max_bytes: int = 10_000_000,
    what: str,
) -> http.Response:
    response = http.request(
        "GET", url, params=params, headers=_headers(accept), max_bytes=max_bytes
    )
    _check(response, what)
    return response


def _get_json(url: str, *, params: dict[str, Any] | None = None, what: str) -> Any:
    return _request(url, params=params, what=what).json()


def _check(response: http.Response, what: str) -> None:
    status = response.status
    if status < 400:
        return
    headers = response.headers
    message = _message(response)
    if status in (403, 429) and headers.get("x-ratelimit-remaining") == "0":
        reset = headers.get("x-ratelimit-reset", "")
        wait = max(0, int(reset) - int(time.time())) if reset.isdigit() else None
        when = f" it resets in {wait} s" if wait is not None else " try again later"
        raise ToolError(f"GitHub's API rate limit is used up ({message});{when}")
    if status in (403, 429) and "retry-after" in headers:
        raise ToolError(
            f"GitHub is rate limiting these requests ({message}); retry after "
            f"{headers['retry-after']} s"
        )
    if status == 401:
        raise ToolError(
            f"GitHub refused the token (401 {message}): GITHUB_TOKEN in the egress "
            "proxy's secret sources is missing, expired or revoked"
        )
    if status == 403:
        raise ToolError(
            f"GitHub refused access to {what} (403 {message}): the token lacks the "
            "permission, or the resource is restricted"
        )
    if status == 404:
        raise ToolError(
            f"{what} was not found on GitHub (404): check the repository "
            '("owner/name"), the number or path, and that the token can see the '
            "repository (GitHub answers 404 for private ones it cannot)"
        )
    if status == 422:
        raise ToolError(f"GitHub could not process the request for {what} (422 {message})")
    raise ToolError(f"GitHub answered {status} for {what}: {message}")


def _message(response: http.Response) -> str:
    try:
        body = response.json()
    except Exception:
        return response.text()[:300].strip() or "no message"
    if not isinstance(body, dict):
        return "no message"
    message = str(body.get("message") or "no message")
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        details = "; ".join(
            str(e.get("message") or e.get("code") or e) if isinstance(e, dict) else str(e)
            for e in errors
        )
        message = f"{message}: {details}"
    return message


def _next_link(link: str | None) -> str | None:
    """The `rel="next"` URL of a `Link` header."""
    for part in (link or "").split(","):
        section = part.split(";")
        if len(section) < 2:
            continue
        if any(p.strip() in ('rel="next"', "rel=next") for p in section[1:]):
            return section[0].strip().strip("<>")
    return None


def _paginate(
    url: str,
    params: dict[str, Any],
    limit: int,
    *,
    what: str,
    key: str | None = None,
    keep: Any = None,
) -> list[dict[str, Any]]:
    """Items of a list endpoint up to `limit`, following `Link: rel="next"`."""
    items: list[dict[str, Any]] = []
    next_url: str | None = url
    next_params: dict[str, Any] | None = {**params, "per_page": min(100, max(limit, 1))}
    while next_url and len(items) < limit:
        response = _request(next_url, params=next_params, what=what)
        body = response.json()
        page = body.get(key, []) if key else body
        if not isinstance(page, list):
            raise ToolError(f"GitHub answered {what} with an unexpected body")
        items.extend(i for i in page if keep is None or keep(i))
        next_url = _next_link(response.headers.get("link"))
        next_params = None  # the next link carries the query
        if not page:
            break
    return items[:limit]


# ---- Actions helpers ----


def _workflow_ref(repo: str, workflow: str) -> str:
    """A workflow id or file name for the URL, from an id, a file name or a display name."""
    workflow = workflow.strip()
    if workflow.isdigit() or workflow.endswith((".yml", ".yaml")):
        return quote(workflow.rsplit("/", 1)[-1], safe="")
    found = _paginate(
        f"{_api()}/repos/{_repo(repo)}/actions/workflows",
        {},
        300,
        what=f"workflows of {repo}",
        key="workflows",
    )
    wanted = workflow.casefold()
    exact = [w for w in found if str(w.get("name", "")).casefold() == wanted]
    partial = [
        w
        for w in found
        if wanted in str(w.get("name", "")).casefold()
        or wanted in str(w.get("path", "")).casefold()
    ]
    match = exact or partial
    if len(match) == 1 or exact:
        return str(match[0]["id"])
    names = ", ".join(
        f"{w.get('name')!r} ({str(w.get('path', '')).rsplit('/', 1)[-1]})"
        for w in (partial or found)
    )
    if not match:
        raise ToolError(
            f"no workflow of {repo} is named like {workflow!r}; its workflows: {names or 'none'}"
        )
    raise ToolError(f"{workflow!r} matches several workflows of {repo}: {names}; name one")


def _runs(
    repo: str, branch: str | None, status: str | None, workflow: str | None, limit: int
) -> list[dict[str, Any]]:
    base = f"{_api()}/repos/{_repo(repo)}/actions"
    url = f"{base}/workflows/{_workflow_ref(repo, workflow)}/runs" if workflow else f"{base}/runs"
    params = {k: v for k, v in (("branch", branch), ("status", status)) if v}
    return _paginate(
        url, params, _limit(limit, 200), what=f"workflow runs of {repo}", key="workflow_runs"
    )


def _failed_job(repo: str, job: dict[str, Any], log_lines: int) -> dict[str, Any]:
    failed_steps = [
        {"number": s.get("number"), "name": s.get("name"), "conclusion": s.get("conclusion")}
        for s in job.get("steps") or []
        if s.get("conclusion") in FAILED
    ]
    result: dict[str, Any] = {
        "id": job.get("id"),
        "name": job.get("name"),
        "conclusion": job.get("conclusion"),
        "html_url": job.get("html_url"),
        "started_at": job.get("started_at"),
        "completed_at": job.get("completed_at"),
        "failed_steps": failed_steps,
        "error_lines": [],
        "log_tail": [],
    }
    try:
        log = _job_log(repo, int(job["id"]))
    except ToolError as error:
        result["log_error"] = str(error)
        return result
    lines = [LOG_TIMESTAMP.sub("", line) for line in log.splitlines()]
    errors = [line for line in lines if ERROR_LINE.search(line)]
    result["error_lines"] = [_clip(line) for line in errors[-40:]]
    result["log_tail"] = [_clip(line) for line in lines[-log_lines:]]
    return result


def _job_log(repo: str, job_id: int) -> str:
    """A job's log text. The API answers 302 to a short-lived URL on another host (GitHub's
    log storage); that request carries no GitHub token."""
    what = f"the log of job {job_id}"
    url = f"{_api()}/repos/{_repo(repo)}/actions/jobs/{job_id}/logs"
    response = http.request(
        "GET", url, headers=_headers(JSON), follow_redirects=False, max_bytes=DOWNLOAD_CAP
    )
    if response.status in (301, 302, 303, 307, 308):
        location = response.headers.get("location")
        if not location:
            raise ToolError(f"GitHub redirected {what} without a location")
        response = http.request(
            "GET", location, headers={"User-Agent": USER_AGENT}, max_bytes=DOWNLOAD_CAP
        )
        if response.status >= 400:
            host = urlsplit(location).hostname
            raise ToolError(
                f"GitHub's log storage ({host}) answered {response.status} for {what}"
                "; the log link expires after a minute, so try again"
            )
        return response.text()
    if response.status == 410:
        raise ToolError(f"{what} is gone (410): GitHub deleted it (logs expire)")
    _check(response, what)
    return response.text()


# ---- shapes ----


def _repo(repo: str) -> str:
    """`owner/name` for a URL: each part quoted whole (a `/`, `?` or `#` in it cannot reach
    another API route), `.` and `..` refused."""
    parts = repo.strip().strip("/").split("/")
    if len(parts) != 2 or not all(parts) or any(part in (".", "..") for part in parts):
        raise ToolError(f'repo must be "owner/name" (e.g. "octocat/hello-world"), not {repo!r}')
    return f"{quote(parts[0], safe='')}/{quote(parts[1], safe='')}"


def _path(path: str) -> str:
    """A path inside a repository for a URL: each segment quoted, and empty, `.` and `..`
    segments refused (they would reach another API route, not another file)."""
    if not path:
        return ""
    segments = path.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise ToolError(
            f'path must be a path inside the repository such as "src/app.py", without empty, '
            f'"." or ".." parts, not {path!r}'
        )
    return "/".join(quote(segment, safe="") for segment in segments)


def _limit(limit: int, most: int) -> int:
    if limit < 1:
        raise ToolError("limit must be at least 1")
    return min(limit, most)


def _login(item: dict[str, Any]) -> str | None:
    return (item.get("user") or {}).get("login")


def _clip(line: str, most: int = 500) -> str:
    return line if len(line) <= most else line[:most] + "…"


def _issue_summary(issue: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": issue.get("number"),
        "title": issue.get("title"),
        "state": issue.get("state"),
        "user": _login(issue),
        "labels": [
            label.get("name") if isinstance(label, dict) else label
            for label in issue.get("labels") or []
        ],
        "assignees": [a.get("login") for a in issue.get("assignees") or []],
        "comments": issue.get("comments"),
        "created_at": issue.get("created_at"),
        "updated_at": issue.get("updated_at"),
        "html_url": issue.get("html_url"),
    }


def _pull_summary(pull: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": pull.get("number"),
        "title": pull.get("title"),
        "state": pull.get("state"),
        "draft": pull.get("draft"),
        "user": _login(pull),
        "head": (pull.get("head") or {}).get("ref"),
        "base": (pull.get("base") or {}).get("ref"),
        "created_at": pull.get("created_at"),
        "updated_at": pull.get("updated_at"),
        "html_url": pull.get("html_url"),
    }


def _run_summary(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": run.get("id"),
        "name": run.get("name"),
        "display_title": run.get("display_title"),
        "run_number": run.get("run_number"),
        "run_attempt": run.get("run_attempt"),
        "event": run.get("event"),
        "head_branch": run.get("head_branch"),
        "head_sha": run.get("head_sha"),
        "status": run.get("status"),
        "conclusion": run.get("conclusion"),
        "created_at": run.get("created_at"),
        "html_url": run.get("html_url"),
    }
