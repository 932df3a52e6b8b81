"""Slack: read a thread or a channel's history, search messages, post a message, over the Web
API.

The tokens never reach this process: `SLACK_BOT_TOKEN` and `SLACK_USER_TOKEN` hold placeholders
that the egress proxy swaps for the real tokens on slack.com.
"""

from __future__ import annotations

import re
import time
from typing import Any

from centaur_tools import Tool, ToolError, context, http

DEFAULT_API_URL = "https://slack.com/api"
BOT_TOKEN = "SLACK_BOT_TOKEN"
USER_TOKEN = "SLACK_USER_TOKEN"
# The longest Retry-After waited out (once); a longer one fails the call with the wait.
MAX_RETRY_WAIT = 20
CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")
MENTION = re.compile(r"<@([UW][A-Z0-9]+)(\|[^>]*)?>")
# A call resolves at most this many distinct users to names (users.info each).
MAX_NAMES = 30
HINTS = {
    "not_in_channel": "the bot is not a member of that channel: invite it (/invite @bot)",
    "channel_not_found": "no such channel, or the bot cannot see it: give a channel id "
    "(C…) or a name the bot can see",
    "thread_not_found": "no thread starts at that ts in that channel",
    "message_not_found": "no message has that ts in that channel",
    "missing_scope": "the token lacks a scope the method needs",
    "not_allowed_token_type": "this method needs another kind of token (search needs a user "
    "token, SLACK_USER_TOKEN)",
    "invalid_auth": "the token is not valid: check it in the egress proxy's secret sources",
    "not_authed": "no token reached Slack: check the secret in the egress proxy's sources",
    "account_inactive": "the token's user or app was deactivated",
    "token_revoked": "the token was revoked",
    "is_archived": "the channel is archived",
    "msg_too_long": "the text is too long (Slack's limit is 40,000 characters)",
    "no_text": "the message has no text",
    "ratelimited": "Slack is rate limiting this method: try again in a minute",
    "invalid_ts_latest": "ts is not a valid message timestamp (like 1712345678.123456)",
    "invalid_ts_oldest": "oldest is not a valid timestamp (like 1712345678.123456)",
}


class Slack(Tool):
    """Reads and posts to Slack as the workspace's Centaur bot."""

    def read_thread(self, channel: str, ts: str, limit: int = 100) -> dict[str, Any]:
        """Reads a thread: its parent message first, then the replies in order.

        Args:
            channel: The channel's id ("C0123ABCD") or name ("#billing").
            ts: The thread's parent message timestamp, e.g. "1712345678.123456" (the `p…` part
                of a message link, with a dot before the last six digits, works too).
            limit: At most this many messages (1-1000).
        """
        channel_id = _channel_id(channel)
        names = _Names()
        messages, has_more = _paged(
            "conversations.replies", {"channel": channel_id, "ts": _ts(ts)}, _limit(limit, 1000)
        )
        return {
            "channel": channel_id,
            "ts": _ts(ts),
            "has_more": has_more,
            "messages": [names.message(m) for m in messages],
        }

    def channel_history(
        self, channel: str, limit: int = 50, oldest: str | None = None
    ) -> dict[str, Any]:
        """Reads a channel's latest messages (without thread replies), oldest first.

        Args:
            channel: The channel's id ("C0123ABCD") or name ("#billing").
            limit: At most this many messages, the latest ones (1-1000).
            oldest: Only messages after this timestamp ("1712345678.123456").
        """
        channel_id = _channel_id(channel)
        params = {"channel": channel_id}
        if oldest:
            params["oldest"] = _ts(oldest)
        names = _Names()
        messages, has_more = _paged("conversations.history", params, _limit(limit, 1000))
        return {
            "channel": channel_id,
            "has_more": has_more,
            "messages": [names.message(m) for m in reversed(messages)],
        }

    def search_messages(self, query: str, limit: int = 20) -> dict[str, Any]:
        """Searches the workspace's messages (needs the user token SLACK_USER_TOKEN).

        Args:
            query: Slack search syntax, e.g. "invoice failed in:#billing after:2024-05-01".
            limit: At most this many matches, best first (1-500).
        """
        if not query.strip():
            raise ToolError("query is empty: give the words to search for")
        limit = _limit(limit, 500)
        per_page = min(limit, 100)
        matches: list[dict[str, Any]] = []
        total = 0
        page = 1
        while len(matches) < limit:
            body = _call(
                "search.messages",
                {"query": query, "count": per_page, "page": page},
                token=USER_TOKEN,
            )
            found = body.get("messages") or {}
            total = found.get("total", 0)
            batch = found.get("matches") or []
            matches.extend(batch)
            pages = (found.get("paging") or {}).get("pages", 1)
            if not batch or page >= pages:
                break
            page += 1
        names = _Names()
        return {
            "query": query,
            "total": total,
            "matches": [
                {
                    "channel": (m.get("channel") or {}).get("id"),
                    "channel_name": (m.get("channel") or {}).get("name"),
                    "ts": m.get("ts"),
                    "user": m.get("user"),
                    "user_name": m.get("username") or names.name(m.get("user")),
                    "text": names.text(m.get("text") or ""),
                    "permalink": m.get("permalink"),
                }
                for m in matches[:limit]
            ],
        }

    def post_message(self, channel: str, text: str, thread_ts: str | None = None) -> dict[str, Any]:
        """Posts a message to a channel, or a reply in a thread (a person approves it first).

        Args:
            channel: The channel's id ("C0123ABCD") or name ("#billing").
            text: The message, in Slack's mrkdwn (*bold*, _italic_, `code`, <https://x|link>).
            thread_ts: Reply in the thread that starts at this timestamp.
        """
        if not text.strip():
            raise ToolError("text is empty: say something")
        payload: dict[str, Any] = {"channel": _channel_id(channel), "text": text}
        if thread_ts:
            payload["thread_ts"] = _ts(thread_ts)
        body = _call("chat.postMessage", payload, as_json=True)
        result = {
            "channel": body.get("channel"),
            "ts": body.get("ts"),
            "thread_ts": payload.get("thread_ts"),
            "permalink": None,
        }
        try:
            link = _call(
                "chat.getPermalink", {"channel": body.get("channel"), "message_ts": body.get("ts")}
            )
            result["permalink"] = link.get("permalink")
        except ToolError as error:
            context().log.info("no permalink for the posted message: %s", error)
        return result


# ---- the Web API ----


def _api() -> str:
    return str(context().setting("SLACK_API_URL", DEFAULT_API_URL) or DEFAULT_API_URL).rstrip("/")


def _token(name: str) -> str:
    try:
        return context().secret(name)
    except ToolError:
        if name == USER_TOKEN:
            raise ToolError(
                "searching Slack needs a user token (xoxp-, scope search:read): "
                "an operator declares SLACK_USER_TOKEN in the egress proxy's secret "
                "sources"
            ) from None
        raise


def _call(
    method: str, args: dict[str, Any], *, token: str = BOT_TOKEN, as_json: bool = False
) -> dict[str, Any]:
    """One Web API call: POST, form-encoded (or JSON), `{"ok": false}` made a ToolError, one
    wait on a 429's Retry-After."""
    headers = {"Authorization": f"Bearer {_token(token)}"}
    if as_json:
        headers["Content-Type"] = "application/json; charset=utf-8"
    form = {k: str(v) for k, v in args.items() if v is not None}
    for attempt in (1, 2):
        response = http.request(
            "POST",
            f"{_api()}/{method}",
            headers=headers,
            json=args if as_json else None,
            data=None if as_json else form,
        )
        if response.status != 429:
            break
        wait = response.headers.get("retry-after", "")
        seconds = int(wait) if wait.isdigit() else 1
        if attempt == 2 or seconds > MAX_RETRY_WAIT:
            raise ToolError(f"Slack is rate limiting {method}: retry after {seconds} s")
        context().log.info("%s rate limited; waiting %s s", method, seconds)
        time.sleep(seconds)
    if response.status >= 400:
        raise ToolError(f"Slack answered {response.status} to {method}: {response.excerpt()}")
    body = response.json()
    if not isinstance(body, dict):
        raise ToolError(f"Slack answered {method} with an unexpected body")
    if not body.get("ok"):
        error = str(body.get("error") or "unknown_error")
        hint = HINTS.get(error, "")
        if error == "missing_scope" and body.get("needed"):
            hint = f"the token lacks the scope {body['needed']} (it has: {body.get('provided')})"
        raise ToolError(f"Slack refused {method}: {error}" + (f" ({hint})" if hint else ""))
    return body


def _paged(method: str, args: dict[str, Any], limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Messages of a cursor-paged method up to `limit`, and whether more remain."""
    messages: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page_args = {**args, "limit": min(200, limit - len(messages))}
        if cursor:
            page_args["cursor"] = cursor
        body = _call(method, page_args)
        messages.extend(body.get("messages") or [])
        cursor = (body.get("response_metadata") or {}).get("next_cursor") or ""
        if not cursor or len(messages) >= limit:
            return messages[:limit], bool(cursor) or len(messages) > limit


def _channel_id(channel: str) -> str:
    """A channel id from an id or a name ("#billing", "billing")."""
    channel = channel.strip()
    if CHANNEL_ID.match(channel):
        return channel
    name = channel.lstrip("#").lower()
    if not name:
        raise ToolError("channel is empty: give an id (C0123ABCD) or a name (#billing)")
    cursor = ""
    for _ in range(20):
        args: dict[str, Any] = {
            "types": "public_channel,private_channel",
            "exclude_archived": "true",
            "limit": 1000,
        }
        if cursor:
            args["cursor"] = cursor
        body = _call("conversations.list", args)
        for found in body.get("channels") or []:
            if str(found.get("name", "")).lower() == name:
                return str(found["id"])
        cursor = (body.get("response_metadata") or {}).get("next_cursor") or ""
        if not cursor:
            break
    raise ToolError(
        f"no channel named #{name} that the bot can see: give its id (C…), or "
        "invite the bot to a private channel"
    )


def _ts(ts: str) -> str:
    """A message timestamp, also from a link's `p1712345678123456`."""
    ts = ts.strip()
    if re.fullmatch(r"p?\d{16}", ts):
        digits = ts.lstrip("p")
        return f"{digits[:10]}.{digits[10:]}"
    if not re.fullmatch(r"\d+(\.\d+)?", ts):
        raise ToolError(f"{ts!r} is not a Slack timestamp (like 1712345678.123456)")
    return ts


def _limit(limit: int, most: int) -> int:
    if limit < 1:
        raise ToolError("limit must be at least 1")
    return min(limit, most)


class _Names:
    """User ids to display names, via users.info, cached for one call."""

    def __init__(self) -> None:
        self._names: dict[str, str | None] = {}

    def name(self, user: str | None) -> str | None:
        if not user:
            return None
        if user not in self._names:
            if len(self._names) >= MAX_NAMES:
                return None
            try:
                found = _call("users.info", {"user": user}).get("user") or {}
            except ToolError as error:
                context().log.info("users.info %s: %s", user, error)
                found = {}
            profile = found.get("profile") or {}
            candidates = (
                profile.get("display_name"),
                profile.get("real_name"),
                found.get("real_name"),
                found.get("name"),
            )
            self._names[user] = next((c for c in candidates if c and c.strip()), None)
        return self._names[user]

    def text(self, text: str) -> str:
        def mention(match: re.Match[str]) -> str:
            name = self.name(match.group(1))
            return f"@{name}" if name else match.group(0)

        return MENTION.sub(mention, text)

    def message(self, message: dict[str, Any]) -> dict[str, Any]:
        user = message.get("user")
        shaped: dict[str, Any] = {
            "ts": message.get("ts"),
            "user": user,
            "user_name": self.name(user) if user else message.get("username"),
            "text": self.text(message.get("text") or ""),
        }
        for key in ("thread_ts", "subtype", "bot_id", "reply_count"):
            if message.get(key) is not None:
                shaped[key] = message[key]
        if message.get("files"):
            shaped["files"] = [
                f.get("name") or f.get("title") or f.get("id") for f in message["files"]
            ]
        return shaped
