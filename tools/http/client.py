"""HTTP: fetch a web page or an API answer, as readable text or JSON.

The egress proxy decides which hosts the tool reaches: the manifest declares none, an operator
adds them per deployment in `CENTAUR_TOOL_EGRESS` (`{"http": {"allow": ["docs.example.com"]}}`).
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

from centaur_tools import Tool, ToolError, http

USER_AGENT = "centaur-tool-http/1"
ACCEPT = "text/html,application/xhtml+xml,application/json;q=0.9,text/*;q=0.8,*/*;q=0.5"
# The most read of one answer: what is returned is cut to `max_bytes`, but a longer body than
# this is refused.
DOWNLOAD_CAP = 10_000_000
REFUSED = "is not allowed for this tool"
TEXT_TYPES = (
    "application/xml",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/x-yaml",
    "application/yaml",
    "application/toml",
    "application/x-www-form-urlencoded",
    "application/graphql",
    "application/sql",
    "application/csv",
)


class Http(Tool):
    """Fetches URLs the deployment allows: pages as readable text, JSON parsed."""

    def fetch(self, url: str, max_bytes: int = 1_000_000, as_text: bool = True) -> dict[str, Any]:
        """Fetches a URL with GET (redirects followed) and returns its content: an HTML page
        reduced to readable text (headings, paragraphs, lists, links as "text (url)"), JSON
        parsed, other text as it is; other kinds (images, PDFs, archives) are described, not
        returned. Only hosts the deployment allows can be reached: a refused host is an error
        saying so (a person asks an operator to allow it).

        Args:
            url: An http:// or https:// URL.
            max_bytes: At most this many bytes of the body are used (`truncated` says when it
                was cut; a truncated JSON body comes back as text).
            as_text: Reduce HTML to readable text; false returns the HTML source.
        """
        parts = urlsplit(url.strip())
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ToolError(f"only http:// and https:// URLs can be fetched, not {url!r}")
        if not 1 <= max_bytes <= DOWNLOAD_CAP:
            raise ToolError(f"max_bytes must be between 1 and {DOWNLOAD_CAP}")
        host = parts.hostname
        try:
            response = http.request(
                "GET",
                url.strip(),
                headers={"Accept": ACCEPT, "User-Agent": USER_AGENT},
                max_bytes=DOWNLOAD_CAP,
            )
        except ToolError as error:
            message = str(error)
            if REFUSED in message:
                refused = message.split(REFUSED, 1)[0].strip() or host
                raise ToolError(
                    f"{refused} is not allowed for the http tool: an operator adds it to "
                    f"CENTAUR_TOOL_EGRESS ({message})"
                ) from None
            raise
        content_type = response.headers.get("content-type", "")
        mime = content_type.split(";", 1)[0].strip().lower()
        truncated = len(response.body) > max_bytes
        body = response.body[:max_bytes]
        result: dict[str, Any] = {
            "url": response.url,
            "status": response.status,
            "content_type": content_type or None,
            "truncated": truncated,
        }
        if _is_json(mime):
            text = _decode(body, response)
            if not truncated:
                try:
                    return {**result, "json": json.loads(text)}
                except ValueError:
                    pass
            return {**result, "text": text}
        if mime in ("text/html", "application/xhtml+xml") or (not mime and _looks_html(body)):
            html = _decode(body, response)
            if not as_text:
                return {**result, "text": html}
            if truncated and html.rfind("<") > html.rfind(">"):
                html = html[: html.rfind("<")]  # not half a tag
            title, text = reduce_html(html, response.url)
            return {**result, "title": title, "text": text}
        if mime.startswith("text/") or mime in TEXT_TYPES or mime.endswith("+xml") or not mime:
            if not mime and b"\x00" in body[:4096]:
                return {**result, "text": _described(mime, response)}
            return {**result, "text": _decode(body, response)}
        return {**result, "truncated": False, "text": _described(mime, response)}


def _is_json(mime: str) -> bool:
    return mime == "application/json" or mime.endswith("+json") or mime == "text/json"


def _looks_html(body: bytes) -> bool:
    start = body[:512].lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html"))


def _decode(body: bytes, response: http.Response) -> str:
    charset = "utf-8"
    for part in response.headers.get("content-type", "").split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            charset = value.strip('"')
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _described(mime: str, response: http.Response) -> str:
    size = response.headers.get("content-length") or str(len(response.body))
    return f"[{mime or 'unknown content'}, {size} bytes: not text, so not shown]"


# ---- HTML to readable text ----

SKIPPED = {"script", "style", "nav", "noscript", "template", "svg", "iframe", "head", "button"}
BLOCKS = {
    "p", "div", "section", "article", "main", "header", "footer", "aside", "table", "tr",
    "ul", "ol", "dl", "dt", "dd", "blockquote", "figure", "figcaption", "form", "fieldset",
    "details", "summary", "address", "hr", "br", "pre", "li", "body",
    "h1", "h2", "h3", "h4", "h5", "h6",
}  # fmt: skip
# Blocks that end a line but not a paragraph.
TIGHT = {"li", "br", "tr", "dt", "dd"}
VOID = {"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source",
        "track", "wbr", "param"}  # fmt: skip


class _Reader(HTMLParser):
    """Collects a page's readable text: lines of blocks, headings marked with #, list items
    with -, links as "text (url)"."""

    def __init__(self, base_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.lines: list[str] = []
        self.line: list[str] = []
        self.skip_depth = 0
        self.skip_stack: list[str] = []
        self.pre = 0
        self.links: list[tuple[str | None, int]] = []
        self.title: list[str] = []
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
            return
        if self.skip_depth:
            if tag == self.skip_stack[-1] and tag not in VOID:
                self.skip_depth += 1
            return
        if tag in SKIPPED and tag not in VOID:
            self.skip_depth = 1
            self.skip_stack.append(tag)
            return
        if tag in BLOCKS:
            self.flush(blank=tag not in TIGHT)
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.line.append("#" * int(tag[1]) + " ")
        elif tag == "li":
            self.line.append("- ")
        elif tag == "pre":
            self.pre += 1
        elif tag in ("td", "th"):
            self.line.append(" | " if self.line else "")
        elif tag == "a":
            href = dict(attrs).get("href")
            self.links.append((href, len(self.line)))
        elif tag == "img":
            alt = (dict(attrs).get("alt") or "").strip()
            if alt:
                self.line.append(f"[image: {alt}]")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
            return
        if self.skip_depth:
            if tag == self.skip_stack[-1]:
                self.skip_depth -= 1
                if not self.skip_depth:
                    self.skip_stack.pop()
            return
        if tag == "a" and self.links:
            href, start = self.links.pop()
            text = " ".join("".join(self.line[start:]).split())
            url = self._url(href)
            if url and text not in (url, url.removeprefix("mailto:")):
                self.line.append(f" ({url})" if text else url)
        elif tag == "pre":
            self.flush(blank=True, keep_space=True)
            self.pre = max(0, self.pre - 1)
            return
        if tag in BLOCKS:
            self.flush(blank=tag not in TIGHT)

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
            return
        if self.skip_depth:
            return
        if self.pre:
            for i, piece in enumerate(data.split("\n")):
                if i:
                    self.flush(keep_space=True)
                self.line.append(piece)
            return
        self.line.append(re.sub(r"\s+", " ", data))

    def _url(self, href: str | None) -> str | None:
        if not href:
            return None
        href = href.strip()
        if href.startswith(("#", "javascript:", "mailto:", "tel:")):
            return href if href.startswith(("mailto:", "tel:")) else None
        return urljoin(self.base_url, href)

    def flush(self, blank: bool = False, keep_space: bool = False) -> None:
        """Ends the current line; `blank` ends a paragraph (one empty line after it)."""
        text = "".join(self.line)
        self.line = []
        self.links = [(href, 0) for href, _ in self.links]
        if not keep_space:
            text = " ".join(text.split())
        if keep_space or text.strip(" #-|"):
            self.lines.append(text.rstrip())
        if blank and self.lines and self.lines[-1] != "":
            self.lines.append("")


def reduce_html(html: str, base_url: str = "") -> tuple[str | None, str]:
    """A page's title and its readable text."""
    reader = _Reader(base_url)
    reader.feed(html)
    reader.close()
    reader.flush(blank=True)
    text = "\n".join(reader.lines)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    title = " ".join("".join(reader.title).split()) or None
    return title, text
