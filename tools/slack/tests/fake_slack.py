"""A fake of Slack's Web API for the methods the tool uses, speaking its wire format: POST (or
GET) `/api/<method>` with a form-encoded or JSON body and `Authorization: Bearer`, answers HTTP
200 `{"ok": true, …}` or `{"ok": false, "error": "…"}`, cursor pagination through
`response_metadata.next_cursor`, and 429 with `Retry-After` and `{"ok": false, "error":
"ratelimited"}`."""

from __future__ import annotations

import base64
import json
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

BOT_TOKEN = "xoxb-fake-bot-token"
USER_TOKEN = "xoxp-fake-user-token"
TEAM = "T0FAKE01"


@dataclass
class Call:
    method: str
    http_method: str
    content_type: str
    authorization: str
    args: dict[str, Any]


@dataclass
class FakeSlack:
    url: str = ""
    calls: list[Call] = field(default_factory=list)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per channel: top-level messages, oldest first.
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Per (channel, thread ts): the replies, oldest first (the parent is in `history`).
    replies: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    posted: list[dict[str, Any]] = field(default_factory=list)
    # Method name -> how many of its next calls answer 429.
    rate_limit: dict[str, int] = field(default_factory=dict)
    server: ThreadingHTTPServer | None = None
    _clock: int = 1712340000

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def start(self) -> FakeSlack:
        server = _Server(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}/api"
        self.server = server
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def next_ts(self) -> str:
        self._clock += 1
        return f"{self._clock}.000100"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _cursor(offset: int) -> str:
    return base64.b64encode(f"offset:{offset}".encode()).decode()


def _offset(cursor: str) -> int:
    return int(base64.b64decode(cursor).decode().split(":", 1)[1]) if cursor else 0


def _handler(fake: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._handle({k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            kind = self.headers.get("Content-Type", "")
            if kind.startswith("application/json"):
                args = json.loads(raw or b"{}")
            elif kind.startswith("application/x-www-form-urlencoded"):
                args = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            else:
                self._answer({"ok": False, "error": "invalid_form_data"})
                return
            self._handle(args)

        def _answer(
            self, body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, args: dict[str, Any]) -> None:
            path = urlsplit(self.path).path
            method = path.removeprefix("/api/")
            authorization = self.headers.get("Authorization", "")
            fake.calls.append(
                Call(
                    method, self.command, self.headers.get("Content-Type", ""), authorization, args
                )
            )
            if fake.rate_limit.get(method):
                fake.rate_limit[method] -= 1
                self._answer({"ok": False, "error": "ratelimited"}, 429, {"Retry-After": "1"})
                return
            token = authorization.removeprefix("Bearer ")
            if not authorization:
                self._answer({"ok": False, "error": "not_authed"})
                return
            if token not in (BOT_TOKEN, USER_TOKEN):
                self._answer({"ok": False, "error": "invalid_auth"})
                return
            handler = getattr(self, "m_" + method.replace(".", "_"), None)
            if handler is None:
                self._answer({"ok": False, "error": "unknown_method"})
                return
            if method == "search.messages" and token != USER_TOKEN:
                self._answer({"ok": False, "error": "not_allowed_token_type"})
                return
            warnings = []
            if self.headers.get("Content-Type", "") == "application/json":
                warnings.append("missing_charset")
            body = handler(args)
            if warnings and body.get("ok"):
                body["response_metadata"] = {
                    **body.get("response_metadata", {}),
                    "warnings": warnings,
                }
            self._answer(body)

        # ---- methods ----

        def _channel(self, args: dict[str, Any]) -> tuple[dict[str, Any] | None, dict | None]:
            channel = fake.channels.get(str(args.get("channel", "")))
            if channel is None:
                return None, {"ok": False, "error": "channel_not_found"}
            if not channel.get("is_member", True):
                return None, {"ok": False, "error": "not_in_channel"}
            return channel, None

        def _page(self, items: list[Any], args: dict[str, Any], key: str) -> dict[str, Any]:
            limit = int(args.get("limit") or 100)
            start = _offset(str(args.get("cursor") or ""))
            chunk = items[start : start + limit]
            more = start + limit < len(items)
            return {
                "ok": True,
                key: chunk,
                "has_more": more,
                "response_metadata": {"next_cursor": _cursor(start + limit) if more else ""},
            }

        def m_conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
            channel, error = self._channel(args)
            if error:
                return error
            oldest = float(args.get("oldest") or 0)
            newest_first = [
                m for m in reversed(fake.history.get(channel["id"], [])) if float(m["ts"]) > oldest
            ]
            return self._page(newest_first, args, "messages")

        def m_conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
            channel, error = self._channel(args)
            if error:
                return error
            ts = str(args.get("ts"))
            parent = [m for m in fake.history.get(channel["id"], []) if m["ts"] == ts]
            if not parent:
                return {"ok": False, "error": "thread_not_found"}
            return self._page(parent + fake.replies.get((channel["id"], ts), []), args, "messages")

        def m_conversations_list(self, args: dict[str, Any]) -> dict[str, Any]:
            listed = [
                {
                    "id": c["id"],
                    "name": c["name"],
                    "is_channel": True,
                    "is_private": c.get("is_private", False),
                    "is_member": c.get("is_member", True),
                }
                for c in fake.channels.values()
            ]
            # Slack may answer fewer items than `limit` before the end: two a page here.
            return self._page(listed, {**args, "limit": 2}, "channels")

        def m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
            user = fake.users.get(str(args.get("user")))
            if user is None:
                return {"ok": False, "error": "user_not_found"}
            return {"ok": True, "user": user}

        def m_search_messages(self, args: dict[str, Any]) -> dict[str, Any]:
            query = str(args.get("query", "")).lower()
            count = min(int(args.get("count") or 20), 100)
            page = int(args.get("page") or 1)
            matches = []
            for channel_id, messages in fake.history.items():
                channel = fake.channels[channel_id]
                for message in messages:
                    if query in message["text"].lower():
                        user = fake.users.get(message.get("user", ""), {})
                        matches.append(
                            {
                                "iid": f"iid-{message['ts']}",
                                "team": TEAM,
                                "type": "message",
                                "channel": {
                                    "id": channel_id,
                                    "name": channel["name"],
                                    "is_private": False,
                                    "is_mpim": False,
                                },
                                "user": message.get("user"),
                                "username": user.get("name"),
                                "ts": message["ts"],
                                "text": message["text"],
                                "permalink": f"https://fake.slack.com/archives/{channel_id}/p"
                                + message["ts"].replace(".", ""),
                            }
                        )
            pages = max(1, -(-len(matches) // count))
            return {
                "ok": True,
                "query": args.get("query"),
                "messages": {
                    "total": len(matches),
                    "pagination": {
                        "total_count": len(matches),
                        "page": page,
                        "per_page": count,
                        "page_count": pages,
                        "first": (page - 1) * count + 1,
                        "last": min(page * count, len(matches)),
                    },
                    "paging": {"count": count, "total": len(matches), "page": page, "pages": pages},
                    "matches": matches[(page - 1) * count : page * count],
                },
            }

        def m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
            _, error = self._channel(args)
            if error:
                return error
            if not args.get("text") and not args.get("blocks"):
                return {"ok": False, "error": "no_text"}
            message = {
                "type": "message",
                "user": "UBOT",
                "bot_id": "BBOT",
                "text": args["text"],
                "ts": fake.next_ts(),
                "team": TEAM,
            }
            if args.get("thread_ts"):
                message["thread_ts"] = args["thread_ts"]
            fake.posted.append({"channel": args["channel"], **message})
            return {"ok": True, "channel": args["channel"], "ts": message["ts"], "message": message}

        def m_chat_getPermalink(self, args: dict[str, Any]) -> dict[str, Any]:
            ts = str(args.get("message_ts", ""))
            return {
                "ok": True,
                "channel": args.get("channel"),
                "permalink": f"https://fake.slack.com/archives/{args.get('channel')}/p"
                + ts.replace(".", ""),
            }

    return Handler
