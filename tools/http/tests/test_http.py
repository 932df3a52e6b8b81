"""The http tool against a local web site and a fake of the egress proxy's refusals."""

from pathlib import Path

import pytest
from fake_web import PAGE, FakeProxy, FakeWeb

from centaur_tools import ToolError, testing

TOOL_DIR = Path(__file__).parent.parent


def fetch(url: str, **arguments):
    return testing.call(TOOL_DIR, "fetch", url=url, **arguments)


def test_html_is_reduced_to_readable_text(web: FakeWeb) -> None:
    page = fetch(f"{web.url}/page.html")
    assert page["status"] == 200
    assert page["content_type"] == "text/html; charset=utf-8"
    assert page["title"] == "Billing guide"
    assert page["truncated"] is False
    assert page["text"] == (
        "# Invoices\n\n"
        f"An invoice is sent when the send guide ({web.url}/guide/send) says so.\n\n"
        "## Steps\n\n"
        "- Create it\n- Send it\n\n"
        "Questions: billing@example.com."
    )
    assert "hidden" not in page["text"] and "Home" not in page["text"]
    (seen,) = web.seen
    assert seen.headers["user-agent"] == "centaur-tool-http/1"
    assert seen.headers["accept"].startswith("text/html")


def test_html_source_when_not_as_text(web: FakeWeb) -> None:
    page = fetch(f"{web.url}/page.html", as_text=False)
    assert page["text"].startswith("<!DOCTYPE html>") and "<nav>" in page["text"]


def test_json_is_parsed_after_a_redirect(web: FakeWeb) -> None:
    answer = fetch(f"{web.url}/old")
    assert answer == {
        "url": f"{web.url}/data.json",
        "status": 200,
        "content_type": "application/json",
        "truncated": False,
        "json": {"invoices": [{"id": 1, "total": "30.00"}], "next": None},
    }
    assert [s.path for s in web.seen] == ["/old", "/data.json"]
    problem = fetch(f"{web.url}/problem")
    assert problem["status"] == 422 and problem["json"]["title"] == "Unprocessable"


def test_size_limit_truncates(web: FakeWeb) -> None:
    notes = fetch(f"{web.url}/notes.txt", max_bytes=10)
    assert notes["text"] == "café\ncafé\n"  # latin-1, as the charset says
    assert notes["truncated"] is True
    cut_json = fetch(f"{web.url}/data.json", max_bytes=12)
    assert cut_json["truncated"] is True and cut_json["text"] == '{"invoices":'
    assert "json" not in cut_json
    # Cut inside the <b> tag of "is <b>sent</b>": the half tag is dropped, not shown.
    cut_page = fetch(f"{web.url}/page.html", max_bytes=PAGE.index("<b>") + 2)
    assert cut_page["truncated"] is True
    assert cut_page["text"] == "# Invoices\n\nAn invoice is"
    with pytest.raises(ToolError, match="max_bytes must be between"):
        fetch(f"{web.url}/notes.txt", max_bytes=0)


def test_binary_content_is_described_not_dumped(web: FakeWeb) -> None:
    image = fetch(f"{web.url}/logo.png")
    assert image["text"] == "[image/png, 2008 bytes: not text, so not shown]"


def test_an_error_page_is_returned_with_its_status(web: FakeWeb) -> None:
    missing = fetch(f"{web.url}/nothing-here")
    assert missing["status"] == 404 and missing["text"] == "# Not found"


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x", "/relative", "http://"]
)
def test_only_http_urls(web: FakeWeb, url: str) -> None:
    with pytest.raises(ToolError, match="only http:// and https:// URLs"):
        fetch(url)
    assert web.seen == []


def test_a_host_the_proxy_refuses_is_a_clear_error(web: FakeWeb, proxy: FakeProxy) -> None:
    # Allowed: forwarded by the proxy.
    assert fetch(f"{web.url}/data.json")["json"]["next"] is None
    with pytest.raises(
        ToolError,
        match=r"^blocked\.example is not allowed for the http tool: "
        r"an operator adds it to CENTAUR_TOOL_EGRESS",
    ):
        fetch("http://blocked.example/page")
    with pytest.raises(ToolError, match=r"^secure\.example is not allowed for the http tool"):
        fetch("https://secure.example/page")
    assert proxy.requests == [
        f"GET {web.url}/data.json",
        "GET http://blocked.example/page",
        "CONNECT secure.example:443",
    ]


def test_the_manifest_declares_no_hosts() -> None:
    import tomllib

    manifest = tomllib.loads((TOOL_DIR / "pyproject.toml").read_text())["tool"]["centaur"]
    assert manifest["hosts"] == []
    assert "CENTAUR_TOOL_EGRESS" in manifest["description"]
