#!/usr/bin/env python3
"""Scenario-driven MCP client for the FlowLink end-to-end tests.

Runs one named scenario against a stdio MCP server and prints a JSON report on stdout:

    python mcp_scenarios.py --scenario everything-tools [--client-name NAME] -- <server command> [args...]

The server command may be the server itself or `flowlink-proxy ... -- <server>`: the report is meant
to be identical either way once run-specific values (timestamps, temp paths) are normalised by the
Rust side. Everything goes through the official `mcp` SDK (ClientSession over stdio_client).

The client declares sampling, elicitation and roots, answers sampling with a canned message,
elicitation per scenario (accept with fixed content / decline) and roots/list with fixed roots.
Anything the server sends that the scenario did not ask for is recorded too, so a relay that drops,
duplicates or invents messages shows up as a difference.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import traceback
from typing import Any

import anyio
import mcp.types as t
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

# A canned model answer for sampling/createMessage.
SAMPLING_TEXT = "canned sampling answer from the flowlink e2e client"
SAMPLING_MODEL = "flowlink-e2e-canned-model"
ROOTS = [
    {"uri": "file:///flowlink-e2e/workspace", "name": "e2e workspace"},
    {"uri": "file:///flowlink-e2e/other", "name": "other root"},
]
ELICIT_CONTENT: dict[str, Any] = {"name": "Ada Lovelace", "check": True, "integer": 7}

# A tiny text file as a data: URI (keeps gzip-file-as-resource off the network).
GZIP_DATA_URI = "data:text/plain;base64,aGVsbG8gZmxvd2xpbmsK"

_T0 = time.monotonic()
_TRACE = bool(os.environ.get("FLOWLINK_E2E_TRACE"))


def trace(msg: str) -> None:
    """With FLOWLINK_E2E_TRACE=1, timestamps on stderr (where is the time going?)."""
    if _TRACE:
        print(f"[e2e-client {time.monotonic() - _T0:7.3f}s] {msg}", file=sys.stderr, flush=True)


SIMULATED_LOG = re.compile(r"^\w+[- ]level[- ]message", re.IGNORECASE)


def dump(model: Any) -> Any:
    """What came over the wire, as JSON (fields the peer did not send are left out)."""
    if model is None:
        return None
    if isinstance(model, list):
        return [dump(m) for m in model]
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


def error_report(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MCPError):
        err = exc.error
        out: dict[str, Any] = {"code": err.code, "message": err.message}
        if err.data is not None:
            out["data"] = err.data
        return {"error": out}
    return {"exception": type(exc).__name__, "message": str(exc)}


def fill_form(schema: dict[str, Any], yes: bool) -> dict[str, Any]:
    """Answer a form elicitation: ELICIT_CONTENT where the form has the field, then every other
    required field (booleans say `yes`, so a consent form is granted or refused on purpose)."""
    props: dict[str, Any] = schema.get("properties") or {}
    content = {k: v for k, v in ELICIT_CONTENT.items() if k in props}
    for key, prop in props.items():
        if prop.get("type") == "boolean" and (key in schema.get("required", []) or key in content):
            content[key] = yes if key not in ELICIT_CONTENT else (ELICIT_CONTENT[key] if yes else False)
        elif key in schema.get("required", []) and key not in content:
            kind = prop.get("type")
            content[key] = prop.get("default", 0 if kind in ("number", "integer") else "e2e")
    return content


class Recorder:
    """Collects everything the server sends on its own and answers its requests."""

    def __init__(self) -> None:
        self.sampling_requests: list[Any] = []
        self.elicitation_requests: list[Any] = []
        self.roots_requests = 0
        self.log_messages: list[Any] = []
        self.simulated_logs = 0
        self.simulated_log_event = anyio.Event()
        self.notifications: list[str] = []
        self.elicitation_mode = "accept"
        self.roots_event = anyio.Event()
        self.roots_logged = anyio.Event()

    async def sampling(self, ctx: Any, params: t.CreateMessageRequestParams) -> t.CreateMessageResult:
        self.sampling_requests.append(dump(params))
        return t.CreateMessageResult(
            role="assistant",
            content=t.TextContent(type="text", text=SAMPLING_TEXT),
            model=SAMPLING_MODEL,
            stop_reason="endTurn",
        )

    async def elicitation(self, ctx: Any, params: t.ElicitRequestParams) -> t.ElicitResult:
        self.elicitation_requests.append({"mode": self.elicitation_mode, "params": dump(params)})
        if self.elicitation_mode in ("accept", "accept-false"):
            if getattr(params, "mode", None) == "url":
                return t.ElicitResult(action="accept")
            schema = getattr(params, "requested_schema", None)
            schema = schema if isinstance(schema, dict) else dump(schema) or {}
            return t.ElicitResult(action="accept", content=fill_form(schema, self.elicitation_mode == "accept"))
        if self.elicitation_mode == "decline":
            return t.ElicitResult(action="decline")
        return t.ElicitResult(action="cancel")

    async def list_roots(self, ctx: Any) -> t.ListRootsResult:
        self.roots_requests += 1
        self.roots_event.set()
        return t.ListRootsResult(roots=[t.Root(**r) for r in ROOTS])

    async def logging(self, params: t.LoggingMessageNotificationParams) -> None:
        data = params.data
        if isinstance(data, str) and SIMULATED_LOG.match(data):
            # server-everything picks the level at random: count, don't compare.
            self.simulated_logs += 1
            self.simulated_log_event.set()
            return
        self.log_messages.append(dump(params))
        if isinstance(data, str) and data.startswith("Roots updated"):
            self.roots_logged.set()

    async def message(self, message: Any) -> None:
        if isinstance(message, Exception):
            self.notifications.append(f"transport-exception:{type(message).__name__}")
            return
        root = getattr(message, "root", message)
        method = getattr(root, "method", type(root).__name__)
        if method in ("notifications/message", "notifications/progress"):
            return  # recorded by their own callbacks
        self.notifications.append(method)

    def report(self) -> dict[str, Any]:
        return {
            "sampling_requests": self.sampling_requests,
            "elicitation_requests": self.elicitation_requests,
            "roots_requests": self.roots_requests,
            "log_messages": self.log_messages,
            "simulated_log_messages_seen": self.simulated_logs > 0,
            "other_notifications": sorted(set(self.notifications)),
        }


async def call(session: ClientSession, name: str, arguments: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"tool": name, "arguments": arguments or {}}
    trace(f"call {name}")
    try:
        result = await session.call_tool(name, arguments or {}, **kw)
        entry["result"] = dump(result)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        entry.update(error_report(exc))
    trace(f"done {name}")
    return entry


async def list_all(fetch: Any, key: str) -> dict[str, Any]:
    """Follow pagination cursors; report the items and how many pages it took."""
    items: list[Any] = []
    pages = 0
    cursor = None
    while True:
        params = t.PaginatedRequestParams(cursor=cursor) if cursor else None
        result = await fetch(params=params)
        pages += 1
        items.extend(dump(getattr(result, key)))
        cursor = result.next_cursor
        if not cursor or pages > 50:
            break
    return {key: items, "pages": pages}


def init_report(init: t.InitializeResult) -> dict[str, Any]:
    d = dump(init)
    return {
        "protocolVersion": d.get("protocolVersion"),
        "serverInfo": d.get("serverInfo"),
        "capabilities": d.get("capabilities"),
        "has_instructions": bool(d.get("instructions")),
    }


# --------------------------------------------------------------------------------------------
# Scenarios. Each gets (session, recorder, init, args) and returns a dict merged into the report.


async def sc_everything_tools(s: ClientSession, rec: Recorder, args: argparse.Namespace) -> dict[str, Any]:
    calls: list[dict[str, Any]] = []
    progress: list[Any] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append({"progress": p, "total": total, "message": message})

    calls.append(await call(s, "echo", {"message": "hello through flowlink"}))
    calls.append(await call(s, "get-sum", {"a": 19, "b": 23}))
    calls.append(await call(s, "get-tiny-image"))
    calls.append(await call(s, "get-annotated-message", {"messageType": "error"}))
    calls.append(await call(s, "get-annotated-message", {"messageType": "success", "includeImage": True}))
    calls.append(await call(s, "get-resource-links", {"count": 4}))
    calls.append(await call(s, "get-resource-reference", {"resourceType": "Text", "resourceId": 2}))
    calls.append(await call(s, "get-resource-reference", {"resourceType": "Blob", "resourceId": 3}))
    calls.append(await call(s, "get-structured-content", {"location": "Chicago"}))
    calls.append(await call(s, "gzip-file-as-resource", {"name": "hello.txt.gz", "data": GZIP_DATA_URI, "outputType": "resource"}))
    calls.append(
        await call(s, "trigger-long-running-operation", {"duration": 0.3, "steps": 3}, progress_callback=on_progress)
    )
    calls.append(await call(s, "trigger-sampling-request", {"prompt": "Say hi", "maxTokens": 20}))
    rec.elicitation_mode = "accept"
    calls.append(await call(s, "trigger-elicitation-request"))
    rec.elicitation_mode = "decline"
    calls.append(await call(s, "trigger-elicitation-request"))
    rec.elicitation_mode = "accept"
    calls.append(
        await call(
            s,
            "trigger-url-elicitation",
            {"url": "https://example.invalid/consent", "message": "open me", "elicitationId": "e2e-elicit-1"},
        )
    )
    calls.append(await call(s, "get-roots-list"))
    # Unknown tool and invalid arguments: the error path must relay unchanged too.
    calls.append(await call(s, "no-such-tool", {"x": 1}))
    calls.append(await call(s, "get-sum", {"a": "not a number"}))

    # Logging: set the level, switch simulated logging on, wait for its first message, switch off.
    await s.set_logging_level("debug")
    calls.append(await call(s, "toggle-simulated-logging"))
    with anyio.fail_after(15):
        await rec.simulated_log_event.wait()
    calls.append(await call(s, "toggle-simulated-logging"))
    calls.append(await call(s, "toggle-subscriber-updates"))
    calls.append(await call(s, "toggle-subscriber-updates"))
    ping = dump(await s.send_ping())
    return {"calls": calls, "progress": progress, "ping": ping}


async def sc_everything_resources_prompts(s: ClientSession, rec: Recorder, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["resources"] = await list_all(s.list_resources, "resources")
    out["resource_templates"] = await list_all(s.list_resource_templates, "resource_templates")
    reads = []
    uris = [r["uri"] for r in out["resources"]["resources"]][:3]
    uris += ["demo://resource/dynamic/text/1", "demo://resource/dynamic/blob/2", "demo://resource/no/such/thing"]
    for uri in uris:
        try:
            reads.append({"uri": uri, "result": dump(await s.read_resource(uri))})
        except Exception as exc:  # noqa: BLE001
            reads.append({"uri": uri, **error_report(exc)})
    out["resource_reads"] = reads
    sub = []
    for op in (s.subscribe_resource, s.unsubscribe_resource):
        try:
            sub.append(dump(await op("demo://resource/dynamic/text/1")))
        except Exception as exc:  # noqa: BLE001
            sub.append(error_report(exc))
    out["subscribe_unsubscribe"] = sub

    out["prompts"] = await list_all(s.list_prompts, "prompts")
    gets = []
    for name, pargs in [
        ("simple-prompt", None),
        ("args-prompt", {"city": "Lisbon", "state": "Lisboa"}),
        ("args-prompt", {"city": "Porto"}),
        ("completable-prompt", {"department": "Engineering", "name": "Alice"}),
        ("resource-prompt", {"resourceType": "Text", "resourceId": "1"}),
        ("no-such-prompt", None),
    ]:
        try:
            gets.append({"name": name, "arguments": pargs, "result": dump(await s.get_prompt(name, pargs))})
        except Exception as exc:  # noqa: BLE001
            gets.append({"name": name, "arguments": pargs, **error_report(exc)})
    out["prompt_gets"] = gets

    completions = []
    for ref, arg, ctx in [
        (t.PromptReference(type="ref/prompt", name="completable-prompt"), {"name": "department", "value": "E"}, None),
        (
            t.PromptReference(type="ref/prompt", name="completable-prompt"),
            {"name": "name", "value": ""},
            {"department": "Engineering"},
        ),
        (
            t.ResourceTemplateReference(type="ref/resource", uri="demo://resource/dynamic/text/{resourceId}"),
            {"name": "resourceId", "value": "1"},
            None,
        ),
    ]:
        try:
            completions.append(dump(await s.complete(ref, arg, ctx)))
        except Exception as exc:  # noqa: BLE001
            completions.append(error_report(exc))
    out["completions"] = completions
    return out


async def sc_everything_cancel(s: ClientSession, rec: Recorder, args: argparse.Namespace) -> dict[str, Any]:
    """Start a slow call, cancel it on its first progress notification, then check the session lives."""
    first_progress = anyio.Event()
    progress: list[Any] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(p)
        first_progress.set()

    outcome: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:

        async def slow() -> None:
            with anyio.CancelScope() as scope:
                outcome["scope"] = scope
                outcome["call"] = await call(
                    s, "trigger-long-running-operation", {"duration": 30, "steps": 60}, progress_callback=on_progress
                )

        tg.start_soon(slow)
        with anyio.fail_after(15):
            await first_progress.wait()
        outcome["scope"].cancel()
    cancelled = "call" not in outcome
    after = await call(s, "echo", {"message": "still alive after cancel"})
    return {
        "cancelled_before_result": cancelled,
        "progress_before_cancel_seen": len(progress) >= 1,
        "after_cancel": after,
    }


async def sc_calls(s: ClientSession, rec: Recorder, args: argparse.Namespace) -> dict[str, Any]:
    """Generic: list tools, then make the calls given as JSON in --calls ([{tool, arguments}])."""
    steps = json.loads(args.calls or "[]")
    rec.elicitation_mode = args.elicitation
    calls = [await call(s, st["tool"], st.get("arguments") or {}) for st in steps]
    return {"calls": calls}


async def sc_git(s: ClientSession, rec: Recorder, args: argparse.Namespace) -> dict[str, Any]:
    repo = args.repo
    calls = []
    for name, a in [
        ("git_status", {}),
        ("git_log", {"max_count": 5}),
        ("git_diff_unstaged", {}),
        ("git_diff_staged", {}),
        ("git_diff", {"target": "HEAD~1"}),
        ("git_show", {"revision": "HEAD"}),
        ("git_branch", {"branch_type": "local"}),
        ("git_status", {"repo_path": "/definitely/not/a/repo"}),
    ]:
        calls.append(await call(s, name, {"repo_path": repo, **a}))
    return {"calls": calls}


async def sc_time(s: ClientSession, rec: Recorder, args: argparse.Namespace) -> dict[str, Any]:
    calls = [
        await call(s, "get_current_time", {"timezone": "UTC"}),
        await call(s, "convert_time", {"source_timezone": "Europe/Lisbon", "time": "09:30", "target_timezone": "Asia/Tokyo"}),
        await call(s, "get_current_time", {"timezone": "Not/AZone"}),
    ]
    return {"calls": calls}


SCENARIOS = {
    "everything-tools": sc_everything_tools,
    "everything-resources-prompts": sc_everything_resources_prompts,
    "everything-cancel": sc_everything_cancel,
    "calls": sc_calls,
    "git": sc_git,
    "time": sc_time,
}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rec = Recorder()
    params = StdioServerParameters(command=args.server[0], args=args.server[1:], env=None)
    report: dict[str, Any] = {"scenario": args.scenario}
    with anyio.fail_after(args.timeout):
        trace("imports done, starting server")
        async with stdio_client(params) as (read, write):
            async with ClientSession(
                read,
                write,
                sampling_callback=rec.sampling,
                elicitation_callback=None if args.no_elicitation else rec.elicitation,
                list_roots_callback=rec.list_roots,
                logging_callback=rec.logging,
                message_handler=rec.message,
                client_info=t.Implementation(name=args.client_name, version="1.0.0"),
            ) as session:
                init = await session.initialize()
                trace("initialized")
                report["initialize"] = init_report(init)
                if args.scenario.startswith("everything"):
                    # server-everything asks for roots 350 ms after `initialized`, then logs the
                    # count: wait for both so every report holds them in the same place.
                    with anyio.fail_after(15):
                        await rec.roots_event.wait()
                        await rec.roots_logged.wait()
                report["tools"] = [tool["name"] for tool in (await list_all(session.list_tools, "tools"))["tools"]]
                report.update(await SCENARIOS[args.scenario](session, rec, args))
    trace("server stopped")
    report["server_initiated"] = rec.report()
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    ap.add_argument("--client-name", default="flowlink-e2e-client")
    ap.add_argument("--calls", help="JSON list of {tool, arguments} for the 'calls' scenario")
    ap.add_argument("--elicitation", default="accept", choices=["accept", "accept-false", "decline", "cancel"])
    ap.add_argument("--no-elicitation", action="store_true", help="do not declare the elicitation capability")
    ap.add_argument("--repo", help="git repository for the 'git' scenario")
    ap.add_argument("--timeout", type=float, default=90.0, help="overall deadline in seconds")
    ap.add_argument("server", nargs=argparse.REMAINDER, help="-- server command and arguments")
    args = ap.parse_args()
    if args.server and args.server[0] == "--":
        args.server = args.server[1:]
    if not args.server:
        ap.error("missing server command after --")
    try:
        report = anyio.run(run, args)
    except BaseException as exc:  # noqa: BLE001 - a failed scenario must say why, then fail
        traceback.print_exc(file=sys.stderr)
        print(json.dumps({"scenario": args.scenario, "fatal": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(report, indent=1, sort_keys=True, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
