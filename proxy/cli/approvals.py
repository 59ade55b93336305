"""The approver's commands: `airlock approvals list|get`, `airlock approve`, `airlock deny`.

They call the gateway's HTTP API (/api/v1/approvals) with the approver's bearer token,
synchronously with urllib: each run is one request. Exit codes: 0 done, 1 the API
refused (4xx, or any other error answer), 2 usage (bad option, no token, unsafe
--server), 3 the server could not be reached, timed out, or answered 502/503/504.

The token never reaches output: it is checked before use (so http.client cannot raise
an error quoting it), redirects are not followed (the Authorization header would go
with them), plain http is refused except to loopback, and every line printed is
redacted in case a server echoes it. SQL and parameters come from agents, so control
and bidi characters are shown escaped (proxy.rendering): an agent must not be able to
redraw the approver's terminal to hide what it asks for.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import re
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from proxy.addresses import is_loopback
from proxy.config import parse_duration
from proxy.rendering import clip as _clip
from proxy.rendering import field_text as _text
from proxy.rendering import (
    format_age,
    format_duration,
    format_parameter,
    one_line_sql,
    preview_lines,
    printable,
)

DEFAULT_SERVER = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_S = 10.0
STATES = ("pending", "approved", "denied", "withdrawn", "all")
SCOPES = ("statement", "session")

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

#: An approvals list is JSON text; anything near this is not one.
MAX_ANSWER_BYTES = 32 * 1024 * 1024
#: Statuses a proxy in front of the gateway uses for "the gateway is not there".
_UNAVAILABLE_STATUSES = frozenset({502, 503, 504})
#: Tokens shorter than this are not redacted from output (it would mangle ordinary text).
_MIN_REDACTED_TOKEN_CHARS = 8
_REDACTED = "[redacted]"

REQUESTER_COLUMN_CHARS = 32
SERVER_MESSAGE_CHARS = 500
#: The summary's value column, the same for every approval: len("parameters: ") + 1.
_LABEL_WIDTH = 13

# Visible ASCII but space: all a bearer token (a JWT is base64url and dots) ever holds.
_TOKEN_CHARS = re.compile(r"[!-~]+")


# --- errors ----------------------------------------------------------------------------------


class UsageError(Exception):
    """A bad option or environment: exit 2."""


class ApiRefused(Exception):
    """The server answered with an error status: exit 1 (3 for 502/503/504)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ServerUnreachable(Exception):
    """No answer at all: refused, unresolvable, TLS failure, timeout. Exit 3."""


class BadAnswer(Exception):
    """A 2xx answer that is not the JSON the contract describes: exit 1."""


# --- the HTTP client ---------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Turn 3xx into errors: urllib would send the Authorization header to the new place."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


@dataclass(frozen=True, slots=True)
class ApiClient:
    """The approvals API at `server` (a base URL without /api/v1), as one approver."""

    server: str
    token: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    cacert: str | None = None

    def __post_init__(self) -> None:
        if urlsplit(self.server).scheme not in ("http", "https"):
            raise ValueError("ApiClient needs an http:// or https:// server")

    def list_approvals(self, state: str, **filters: str | None) -> list[dict[str, Any]]:
        """Requests in `state`; `filters` (requester, target, since) narrow the history."""
        query = {"state": state} | {k: v for k, v in filters.items() if v is not None}
        answer = self._call("GET", "/api/v1/approvals?" + urlencode(query))
        approvals = answer.get("approvals") if isinstance(answer, dict) else None
        if not isinstance(approvals, list) or not all(isinstance(a, dict) for a in approvals):
            raise BadAnswer('expected {"approvals": [...]}')
        return approvals

    def get_approval(self, approval_id: str) -> dict[str, Any]:
        return _approval(self._call("GET", _approval_path(approval_id)))

    def approve(
        self,
        approval_id: str,
        *,
        scope: str = "statement",
        ttl_s: float | None = None,
        comment: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"scope": scope}
        if ttl_s is not None:
            body["ttl_s"] = int(ttl_s) if ttl_s.is_integer() else ttl_s
        if comment is not None:
            body["comment"] = comment
        return _approval(self._call("POST", _approval_path(approval_id) + "/approve", body))

    def deny(self, approval_id: str, *, reason: str) -> dict[str, Any]:
        answer = self._call("POST", _approval_path(approval_id) + "/deny", {"reason": reason})
        return _approval(answer)

    def refresh_sessions(self, session_id: str | None) -> list[dict[str, Any]]:
        """Extend one live session (or, with None, every live session of the token's
        subject) with this client's token, which is the fresh one."""
        if session_id is None:
            answer = self._call("POST", "/api/v1/sessions/refresh")
            sessions = answer.get("sessions") if isinstance(answer, dict) else None
        else:
            path = "/api/v1/sessions/" + quote(session_id, safe="") + "/refresh"
            answer = self._call("POST", path)
            sessions = [answer]
        if not isinstance(sessions, list) or not all(isinstance(s, dict) for s in sessions):
            raise BadAnswer('expected {"sessions": [...]}')
        return sessions

    def get(self, path: str) -> Any:
        """GET an API path (with its query), the answer's JSON."""
        return self._call("GET", path)

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        # The scheme is http or https: __post_init__ refuses anything else.
        request = urllib.request.Request(  # noqa: S310
            self.server + path, data=payload, headers=headers, method=method
        )
        try:
            with self._opener().open(request, timeout=self.timeout_s) as response:
                raw = response.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as error:
            with error:
                raise self._refusal(error) from None
        except urllib.error.URLError as error:
            raise ServerUnreachable(self._unreachable(error.reason)) from None
        except (OSError, http.client.HTTPException) as error:
            # Timeouts and resets while reading the answer arrive unwrapped.
            raise ServerUnreachable(self._unreachable(error)) from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise BadAnswer(f"answer larger than {MAX_ANSWER_BYTES} bytes")
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BadAnswer("answer is not JSON") from None

    def _opener(self) -> urllib.request.OpenerDirector:
        context = ssl.create_default_context(cafile=self.cacert)
        host = urlsplit(self.server).hostname or ""
        # Loopback never goes through an http_proxy from the environment.
        proxies = urllib.request.ProxyHandler({} if is_loopback(host) else None)
        return urllib.request.build_opener(
            proxies, urllib.request.HTTPSHandler(context=context), _NoRedirect()
        )

    def _refusal(self, error: urllib.error.HTTPError) -> ApiRefused:
        status = error.code
        if 300 <= status < 400:
            location = printable(error.headers.get("Location") or "?")
            return ApiRefused(
                status,
                f"{self.server} answered HTTP {status} (redirect to {location}); not followed, "
                "so the token goes only to --server: point it at the gateway itself",
            )
        try:
            raw = error.read(MAX_ANSWER_BYTES + 1)
        except (OSError, http.client.HTTPException):
            raw = b""
        message = _error_message(raw)
        if message is None:
            message = f"{self.server} answered HTTP {status} {error.reason or ''}".rstrip()
        if status in _UNAVAILABLE_STATUSES:
            message = f"{self.server} is unavailable: {message}"
        elif status == 401:
            message += " (check --token / AIRLOCK_TOKEN)"
        return ApiRefused(status, message)

    def _unreachable(self, reason: object) -> str:
        if isinstance(reason, TimeoutError):
            return f"no answer from {self.server} within {self.timeout_s:g}s"
        if isinstance(reason, ssl.SSLCertVerificationError):
            detail = reason.verify_message or "certificate verify failed"
            return (
                f"cannot reach {self.server}: TLS certificate not trusted ({detail}); "
                "--cacert FILE names the CA that signed it"
            )
        if isinstance(reason, OSError) and reason.strerror:
            detail = reason.strerror
        else:
            detail = str(reason) or type(reason).__name__
        return f"cannot reach {self.server}: {detail}"


def _approval_path(approval_id: str) -> str:
    # Quoted whole, so an id like "../x" stays one path segment.
    return "/api/v1/approvals/" + quote(approval_id, safe="")


def _approval(answer: Any) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise BadAnswer("expected an approval object")
    return answer


def _error_message(raw: bytes) -> str | None:
    """`code: message` from an error body shaped {"error": {"code", "message"}}, else None."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return None
    code = error.get("code")
    message = error.get("message")
    code_text = code if isinstance(code, str) and code else None
    message_text = message if isinstance(message, str) and message else None
    if message_text is None:
        return code_text
    if code_text is None or message_text.startswith(code_text):
        return message_text
    return f"{code_text}: {message_text}"


# --- rendering ---------------------------------------------------------------------------------


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _age(value: Any, now: datetime) -> str:
    moment = _timestamp(value)
    return "?" if moment is None else format_age((now - moment).total_seconds())


def _when(value: Any, now: datetime) -> str:
    """The timestamp as sent, with how long ago or until: '... (5m ago)', '... (in 10m)'."""
    shown = _text(value)
    moment = _timestamp(value)
    if moment is None:
        return shown
    seconds = (moment - now).total_seconds()
    # Rounded up ahead, down behind: a 10m grant reads "in 10m" when just made, not "in 9m".
    relative = (
        f"in {format_age(math.ceil(seconds))}" if seconds > 0 else f"{format_age(-seconds)} ago"
    )
    return f"{shown} ({relative})"


def _requester(approval: Mapping[str, Any]) -> tuple[str, str, str]:
    """(subject, email, groups) of the requester, as printable text."""
    requester = approval.get("requester")
    if not isinstance(requester, dict):
        return _text(requester), "", ""
    groups = requester.get("groups")
    group_text = ", ".join(_text(g) for g in groups) if isinstance(groups, list) else ""
    return _text(requester.get("subject")), _text(requester.get("email")), group_text


def _approvals_text(approval: Mapping[str, Any], required: int) -> str:
    """ "1 of 2 (alice)": the two-person rule's count, and who approved so far."""
    decisions = approval.get("decisions")
    approvers = [
        _text(d.get("by"))
        for d in (decisions if isinstance(decisions, list) else [])
        if isinstance(d, dict) and d.get("verdict") == "approve"
    ]
    text = f"{len(approvers)} of {required}"
    return text + (f" ({', '.join(approvers)})" if approvers else "")


def _state_text(approval: Mapping[str, Any]) -> str:
    """The state; a pending request that needs several approvers adds its count: 1/2."""
    state = _text(approval.get("state"))
    required, received = approval.get("approvals_required"), approval.get("approvals_received")
    if state == "pending" and isinstance(required, int) and required > 1:
        state += f" {received if isinstance(received, int) else 0}/{required}"
    return state


def render_table(approvals: Sequence[Mapping[str, Any]], now: datetime) -> str:
    header = ("ID", "AGE", "REQUESTER", "TARGET", "CLASS", "STATE", "TRANSACTION", "SQL")
    rows = [header]
    for approval in approvals:
        sql = approval.get("sql")
        rows.append(
            (
                _text(approval.get("id")),
                _age(approval.get("created_at"), now),
                _clip(_requester(approval)[0], REQUESTER_COLUMN_CHARS),
                _text(approval.get("target")),
                _text(approval.get("class")),
                _state_text(approval),
                _transaction(approval),
                one_line_sql(sql) if isinstance(sql, str) else _text(sql),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def _transaction(approval: Mapping[str, Any]) -> str:
    """The session's transaction state when the request was made ("-": not known)."""
    state = approval.get("transaction")
    return "-" if state is None else _text(state)


def render_approval(approval: Mapping[str, Any], now: datetime) -> str:
    """A few labelled lines: what was asked, by whom, and what was decided."""
    fields: list[tuple[str, str]] = [
        ("id", _text(approval.get("id"))),
        ("state", _text(approval.get("state"))),
    ]
    subject, email, groups = _requester(approval)
    requester = (
        subject + (f" <{email}>" if email else "") + (f" (groups: {groups})" if groups else "")
    )
    fields.append(("requester", requester))
    fields.append(("target", _text(approval.get("target"))))
    session = _text(approval.get("session_id"))
    if approval.get("session_state"):
        session += f" ({_text(approval.get('session_state'))})"
    fields.append(("session", session))
    fields.append(("transaction", _transaction(approval)))
    fields.append(("created", _when(approval.get("created_at"), now)))
    reasons = approval.get("reasons")
    class_text = _text(approval.get("class"))
    if isinstance(reasons, list) and reasons:
        class_text += " (" + "; ".join(_text(r) for r in reasons) + ")"
    fields.append(("class", class_text))
    if approval.get("why") is not None:
        fields.append(("why", _text(approval.get("why"))))
    sql = approval.get("sql")
    fields.append(("sql", printable(sql, multiline=True) if isinstance(sql, str) else _text(sql)))
    parameters = approval.get("parameters")
    if isinstance(parameters, list) and parameters:
        fields.append(
            (
                "parameters",
                "\n".join(format_parameter(i, p) for i, p in enumerate(parameters, start=1)),
            )
        )
    impact = preview_lines(approval.get("preview"))
    if impact:
        fields.append(("preview", "\n".join(printable(line) for line in impact)))
    required = approval.get("approvals_required")
    if isinstance(required, int) and required > 1:
        fields.append(("approvals", _approvals_text(approval, required)))
    decision = approval.get("decision")
    if isinstance(decision, dict):
        decided = _text(decision.get("by"))
        if decision.get("at"):
            decided += f" at {_when(decision.get('at'), now)}"
        fields.append(("decided by", decided))
        for label, key in (("scope", "scope"), ("comment", "comment"), ("reason", "reason")):
            if decision.get(key) is not None:
                fields.append((label, _text(decision.get(key))))
        if decision.get("expires_at"):
            fields.append(("expires", _when(decision.get("expires_at"), now)))
    elif approval.get("state") == "pending":
        approvers = approval.get("approver_groups")
        if isinstance(approvers, list):
            fields.append(("approvers", ", ".join(_text(g) for g in approvers)))
        fields.append(("hold", _text(approval.get("hold"))))
    width = _LABEL_WIDTH
    lines = []
    for label, value in fields:
        first, *rest = value.split("\n") or [""]
        lines.append(f"{label + ':':<{width}}{first}".rstrip())
        lines.extend((" " * width + line).rstrip() for line in rest)
    return "\n".join(lines)


# --- the commands ------------------------------------------------------------------------------


class _Console:
    """stdout/stderr with the token replaced, whatever the server sent back."""

    def __init__(self, token: str | None) -> None:
        self._token = token if token and len(token) >= _MIN_REDACTED_TOKEN_CHARS else None

    def _redact(self, text: str) -> str:
        return text.replace(self._token, _REDACTED) if self._token else text

    def out(self, text: str) -> None:
        print(self._redact(text))

    def fail(self, message: str, code: int) -> int:
        one_line = " ".join(_clip(printable(message), SERVER_MESSAGE_CHARS).split())
        print(f"airlock: {self._redact(one_line)}", file=sys.stderr)
        return code


def _token(args: argparse.Namespace) -> str:
    return str(args.token or os.environ.get("AIRLOCK_TOKEN") or "").strip()


def _client(args: argparse.Namespace) -> ApiClient:
    """The client the options and environment describe; UsageError when they are unsafe."""
    token = _token(args)
    if not token:
        raise UsageError("no token: pass --token or set AIRLOCK_TOKEN")
    if not _TOKEN_CHARS.fullmatch(token):
        # Never quoted: http.client would refuse it with an error that does quote it.
        raise UsageError("the token holds spaces or characters a bearer token cannot have")
    server = (args.server or os.environ.get("AIRLOCK_SERVER") or DEFAULT_SERVER).strip()
    try:
        parts = urlsplit(server)
        host = parts.hostname
        _port = parts.port
    except ValueError:
        raise UsageError(f"--server {server!r} is not a URL") from None
    if "@" in parts.netloc:
        raise UsageError("--server must not hold credentials: use --token or AIRLOCK_TOKEN")
    if parts.scheme not in ("http", "https") or not host:
        raise UsageError(f"--server {server!r} must be an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise UsageError(f"--server {server!r} must not have a query or fragment")
    if parts.scheme == "http" and not is_loopback(host):
        raise UsageError(
            f"refusing to send the token over plain http to {host}; use https:// "
            "(plain http is for loopback only)"
        )
    if args.cacert is not None:
        try:
            ssl.create_default_context(cafile=args.cacert)
        except (OSError, ssl.SSLError) as error:
            detail = getattr(error, "strerror", None) or str(error)
            raise UsageError(f"--cacert {args.cacert}: {detail}") from None
    return ApiClient(server.rstrip("/"), token, args.timeout, args.cacert)


def with_client(args: argparse.Namespace, work: Callable[[ApiClient], int]) -> int:
    """Run `work` with the client --server/--token describe; the API's failures become
    exit codes (2 usage, 1 refused, 3 unreachable) with the token redacted."""
    console = _Console(_token(args))
    try:
        client = _client(args)
    except UsageError as error:
        return console.fail(str(error), EXIT_USAGE)
    try:
        return work(client)
    except ServerUnreachable as error:
        return console.fail(str(error), EXIT_UNREACHABLE)
    except ApiRefused as error:
        code = EXIT_UNREACHABLE if error.status in _UNAVAILABLE_STATUSES else EXIT_REFUSED
        return console.fail(error.message, code)
    except BadAnswer as error:
        return console.fail(f"unexpected answer from {client.server}: {error}", EXIT_REFUSED)


def _run(
    args: argparse.Namespace,
    call: Callable[[ApiClient], Any],
    show: Callable[[Any, datetime], str],
    after: Callable[[argparse.Namespace, Any], None] | None = None,
) -> int:
    console = _Console(_token(args))
    try:
        client = _client(args)
    except UsageError as error:
        return console.fail(str(error), EXIT_USAGE)
    try:
        answer = call(client)
    except ServerUnreachable as error:
        return console.fail(str(error), EXIT_UNREACHABLE)
    except ApiRefused as error:
        code = EXIT_UNREACHABLE if error.status in _UNAVAILABLE_STATUSES else EXIT_REFUSED
        return console.fail(error.message, code)
    except BadAnswer as error:
        return console.fail(f"unexpected answer from {client.server}: {error}", EXIT_REFUSED)
    if args.json:
        console.out(json.dumps(answer, indent=2))
    else:
        console.out(show(answer, datetime.now(UTC)))
    if after is not None:
        after(args, answer)
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    def show(approvals: list[dict[str, Any]], now: datetime) -> str:
        if approvals:
            return render_table(approvals, now)
        return "no approvals" if args.state == "all" else f"no {args.state} approvals"

    def call(client: ApiClient) -> list[dict[str, Any]]:
        return client.list_approvals(
            args.state, requester=args.requester, target=args.target, since=args.since
        )

    return _run(args, call, show)


def _get(args: argparse.Namespace) -> int:
    return _run(args, lambda client: client.get_approval(args.id), render_approval)


def _approve(args: argparse.Namespace) -> int:
    def call(client: ApiClient) -> dict[str, Any]:
        return client.approve(args.id, scope=args.scope, ttl_s=args.ttl, comment=args.comment)

    return _run(args, call, _approved, after=_say_if_capped)


def _approved(approval: Mapping[str, Any], now: datetime) -> str:
    """The request after an approval: under the two-person rule, it may still wait."""
    required, received = approval.get("approvals_required"), approval.get("approvals_received")
    shown = render_approval(approval, now)
    if approval.get("state") != "pending" or not isinstance(required, int):
        return shown
    missing = required - received if isinstance(received, int) else required
    more = f"{missing} more approval{'s' if missing != 1 else ''} needed"
    return f"recorded; {more} (from other approvers)\n{shown}"


def _say_if_capped(args: argparse.Namespace, approval: Mapping[str, Any]) -> None:
    """The gateway caps a grant at its rule's grant_ttl (policy.approvals.grant_expiry);
    an approver who asked for longer is told, not left to find out."""
    cap = approval.get("grant_ttl_s")
    if args.ttl is None or not isinstance(cap, int | float) or args.ttl <= cap:
        return
    print(
        f"airlock: note: --ttl {format_duration(args.ttl)} is longer than the rule's "
        f"grant_ttl ({format_duration(cap)}): the grant lasts {format_duration(cap)}",
        file=sys.stderr,
    )


def _deny(args: argparse.Namespace) -> int:
    if not args.reason.strip():
        return _Console(None).fail("--reason must not be empty", EXIT_USAGE)
    return _run(args, lambda client: client.deny(args.id, reason=args.reason), render_approval)


def _refresh(args: argparse.Namespace) -> int:
    def show(sessions: list[dict[str, Any]], _now: datetime) -> str:
        if not sessions:
            return "no live sessions of this identity"
        lines = []
        for session in sessions:
            shown = printable(str(session.get("id")))
            if session.get("refreshed"):
                ends = printable(str(session.get("ends_at")))
                because = printable(str(session.get("ends_because")))
                lines.append(f"{shown}: refreshed; ends {ends} ({because})")
            else:
                lines.append(f"{shown}: not refreshed: {printable(str(session.get('error')))}")
        return "\n".join(lines)

    session = None if args.all else args.session
    return _run(args, lambda client: client.refresh_sessions(session), show)


# --- argparse ----------------------------------------------------------------------------------


def positive_duration(text: str) -> float:
    """An argparse type: a duration above zero (30s, 10m, 1h)."""
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive duration (got {text!r})")
    return seconds


def positive_number(text: str) -> float:
    """An argparse type: a finite number above zero (seconds, a speed factor, ...)."""
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number (got {text!r})") from None
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number (got {text!r})")
    return number


def _approval_id(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def add_session_refresh(
    sessions: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register `sessions refresh [SESSION | --all] --token <fresh token>`."""
    refresh = sessions.add_parser(
        "refresh",
        parents=[_common_options()],
        help="extend live sessions with a fresh token of the same identity (--token)",
    )
    which = refresh.add_mutually_exclusive_group(required=True)
    which.add_argument("session", nargs="?", metavar="SESSION", help="the session's id")
    which.add_argument(
        "--all", action="store_true", help="every live session of the token's subject"
    )
    refresh.set_defaults(handler=_refresh)


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_connection_options(
        common,
        server_help=f"the gateway's API (default $AIRLOCK_SERVER, else {DEFAULT_SERVER})",
        bearer_help="the approver's bearer token (default $AIRLOCK_TOKEN, which keeps it "
        "out of ps)",
    )
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    return common


def add_connection_options(
    parser: argparse.ArgumentParser, *, server_help: str, bearer_help: str
) -> None:
    """--server, --token, --timeout and --cacert, as `with_client` reads them."""
    connection = parser.add_argument_group("connection")
    connection.add_argument("--server", metavar="URL", help=server_help)
    connection.add_argument("--token", help=bearer_help)
    connection.add_argument(
        "--timeout",
        type=positive_number,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"give up after this long (default {DEFAULT_TIMEOUT_S:g})",
    )
    connection.add_argument(
        "--cacert", metavar="FILE", help="trust only this CA for an https:// server"
    )


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `approvals list|get`, `approve` and `deny` on the main command's subparsers."""
    common = _common_options()

    approvals = commands.add_parser("approvals", help="list or show approval requests")
    actions = approvals.add_subparsers(dest="approvals_command", required=True)
    listing = actions.add_parser("list", parents=[common], help="list approval requests")
    listing.add_argument(
        "--state", choices=STATES, default="pending", help="which requests (default pending)"
    )
    listing.add_argument("--requester", metavar="SUBJECT", help="only this requester's")
    listing.add_argument("--target", metavar="NAME", help="only requests on this target")
    listing.add_argument(
        "--since", metavar="WHEN", help="only requests made since, e.g. 24h or 2025-06-01"
    )
    listing.set_defaults(handler=_list)
    get = actions.add_parser("get", parents=[common], help="show one approval request")
    get.add_argument("id", type=_approval_id, metavar="ID")
    get.set_defaults(handler=_get)

    approve = commands.add_parser("approve", parents=[common], help="approve a held statement")
    approve.add_argument("id", type=_approval_id, metavar="ID")
    approve.add_argument(
        "--scope",
        choices=SCOPES,
        default="statement",
        help="statement: this statement once (default); session: writes in its session",
    )
    approve.add_argument(
        "--ttl",
        type=positive_duration,
        metavar="DURATION",
        help="how long the grant lasts, e.g. 30s, 10m, 1h",
    )
    approve.add_argument("--comment", metavar="TEXT", help="recorded with the decision")
    approve.set_defaults(handler=_approve)

    deny = commands.add_parser("deny", parents=[common], help="deny a held statement")
    deny.add_argument("id", type=_approval_id, metavar="ID")
    deny.add_argument("--reason", required=True, metavar="TEXT", help="shown to the agent")
    deny.set_defaults(handler=_deny)
