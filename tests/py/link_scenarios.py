#!/usr/bin/env python3
"""The editor side and the approvers of the FlowLink link end-to-end tests (tests/tests/link*.rs).

One mode per run, a JSON report on stdout:

    link_scenarios.py setup     --api URL --setup-token T --policy FILE [--api-token-scopes S,S]
    link_scenarios.py publish   --api URL --policy FILE
    link_scenarios.py approvals --api URL [--decide-api URL] --steps approve,deny,... -- PROXY ARGV
    link_scenarios.py stream    --count N [--prefix P] -- PROXY ARGV
    link_scenarios.py audit     --api URL

The MCP client is the official `mcp` SDK (ClientSession over stdio_client); the control plane's API
is driven with `requests`: the owner sets the org up, a separate approver decides (a requester may
never decide their own call).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from typing import Any, Callable

import anyio
import requests
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

ORG = "acme"
OWNER = ("owner@acme.test", "correct horse battery staple 1")
APPROVER = ("approver@acme.test", "correct horse battery staple 2")


def log(msg: str) -> None:
    print(f"[link-scenarios {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Api:
    """A signed-in person: session cookie plus the CSRF header."""

    def __init__(self, base: str, who: tuple[str, str] | None = None) -> None:
        self.base = base.rstrip("/")
        self.s = requests.Session()
        if who:
            r = self.s.post(f"{self.base}/api/v1/auth/login", json={"email": who[0], "password": who[1]}, timeout=30)
            r.raise_for_status()
            self.s.headers["X-CSRF-Token"] = r.json()["csrf_token"]

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        r = self.s.request(method, f"{self.base}{path}", json=body, timeout=30)
        if r.status_code not in ok:
            raise RuntimeError(f"{method} {path} -> {r.status_code}: {r.text}")
        return r.json() if r.content else None

    def org(self, method: str, path: str, body: Any = None) -> Any:
        return self.call(method, f"/api/v1/orgs/{ORG}{path}", body)

    def approvals(self, status: str | None = None) -> list[dict[str, Any]]:
        q = f"?status={status}&limit=500" if status else "?limit=500"
        return self.org("GET", f"/approvals{q}")["items"]

    def approval(self, id_: str) -> dict[str, Any]:
        return self.org("GET", f"/approvals/{id_}")

    def decide(self, id_: str, decision: str, comment: str | None = None, minutes: int | None = None) -> Any:
        body: dict[str, Any] = {"decision": decision}
        if comment:
            body["comment"] = comment
        if minutes:
            body["same_call_minutes"] = minutes
        return self.org("POST", f"/approvals/{id_}/decision", body)

    def audit(self, kind: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            q = f"?kind={kind}&limit=500" + (f"&cursor={cursor}" if cursor else "")
            page = self.org("GET", f"/audit{q}")
            out.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return out


def publish(api: Api, policy_file: str, comment: str) -> Any:
    with open(policy_file, encoding="utf-8") as f:
        body = f.read()
    return api.org("POST", "/policies/org/versions", {"body": body, "comment": comment})


def mode_setup(args: argparse.Namespace) -> dict[str, Any]:
    anon = Api(args.api)
    anon.call(
        "POST",
        "/api/v1/setup",
        {
            "token": args.setup_token,
            "email": OWNER[0],
            "password": OWNER[1],
            "display_name": "Olive Owner",
            "org_name": "Acme",
            "org_slug": ORG,
        },
    )
    owner = Api(args.api, OWNER)
    owner.org(
        "POST",
        "/members",
        {"email": APPROVER[0], "role": "approver", "display_name": "Avery Approver", "password": APPROVER[1]},
    )
    version = publish(owner, args.policy, "e2e: first policy")
    token = owner.org("POST", "/enrollment-tokens", {"name": "e2e", "uses": 10})
    report = {"enroll_token": token["token"], "policy": version}
    if args.api_token_scopes:
        # an API token acting for the owner, for the `flowlink-control secrets` CLI
        api_token = owner.org(
            "POST", "/tokens", {"name": "e2e-cli", "scopes": args.api_token_scopes.split(","), "expires_in_days": 1}
        )
        report["api_token"] = api_token["token"]
    return report


def mode_publish(args: argparse.Namespace) -> dict[str, Any]:
    return {"policy": publish(Api(args.api, OWNER), args.policy, "e2e: next policy")}


def mode_audit(args: argparse.Namespace) -> dict[str, Any]:
    return {"tool_call": Api(args.api, OWNER).audit("tool_call")}


def text_of(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in (getattr(result, "content", None) or []))


async def call(s: ClientSession, tool: str, arguments: dict[str, Any], **kw: Any) -> dict[str, Any]:
    try:
        r = await s.call_tool(tool, arguments, **kw)
        return {"is_error": bool(getattr(r, "is_error", getattr(r, "isError", False))), "text": text_of(r)}
    except MCPError as exc:
        return {"error": str(exc)}


async def wait_for(what: str, probe: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Polls `probe` (off the event loop) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        got = await anyio.to_thread.run_sync(probe)
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}")
        await anyio.sleep(0.1)


def pending_for(api: Api, tool: str, arguments: dict[str, Any]) -> Callable[[], Any]:
    def probe() -> Any:
        for a in api.approvals("pending"):
            if a["tool"] == tool and a["arguments"] == arguments:
                return a
        return None

    return probe


def status_is(api: Api, id_: str, status: str) -> Callable[[], Any]:
    def probe() -> Any:
        a = api.approval(id_)
        return a if a["status"] == status else None

    return probe


async def decided_call(
    s: ClientSession, api: Api, decider: Api, tool: str, arguments: dict[str, Any], decision: str | None, **kw: Any
) -> dict[str, Any]:
    """Calls `tool`, waits for its pending request, decides it (unless `decision` is None)."""
    out: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            out["call"] = await call(s, tool, arguments, **kw)

        tg.start_soon(run)
        req = await wait_for(f"pending request for {tool} {arguments}", pending_for(api, tool, arguments))
        out["request"] = req
        if decision:
            started = time.monotonic()
            decider.decide(req["id"], decision, comment=f"e2e says {decision}")
            out["decision_to_result_ms"] = None
            with anyio.fail_after(30):
                while "call" not in out:
                    await anyio.sleep(0.01)
            out["decision_to_result_ms"] = round((time.monotonic() - started) * 1000)
    out["final"] = api.approval(out["request"]["id"])
    return out


async def step_approve(s: ClientSession, api: Api, decider: Api) -> dict[str, Any]:
    return await decided_call(s, api, decider, "echo", {"message": "approve me"}, "approve")


async def step_deny(s: ClientSession, api: Api, decider: Api) -> dict[str, Any]:
    return await decided_call(s, api, decider, "echo", {"message": "deny me"}, "deny")


async def step_timeout(s: ClientSession, api: Api, decider: Api) -> dict[str, Any]:
    started = time.monotonic()
    out = await decided_call(s, api, decider, "get-sum", {"a": 40, "b": 2}, None)
    out["waited_s"] = round(time.monotonic() - started, 1)
    return out


async def step_self_approval(s: ClientSession, api: Api, decider: Api) -> dict[str, Any]:
    """The requester (proxy label user=owner) tries to approve their own call, then the approver does."""
    owner = Api(api.base, OWNER)
    out: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            out["call"] = await call(s, "echo", {"message": "my own call"})

        tg.start_soon(run)
        req = await wait_for("pending request", pending_for(api, "echo", {"message": "my own call"}))
        r = owner.s.post(
            f"{owner.base}/api/v1/orgs/{ORG}/approvals/{req['id']}/decision", json={"decision": "approve"}, timeout=30
        )
        out["self_status"] = r.status_code
        out["self_body"] = r.json() if r.content else None
        decider.decide(req["id"], "deny", comment="not yours to approve")
    return out


async def step_cancel(s: ClientSession, api: Api, decider: Api) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            with anyio.CancelScope() as scope:
                out["scope"] = scope
                out["call"] = await call(s, "echo", {"message": "cancel me"})

        tg.start_soon(run)
        req = await wait_for("pending request for cancel", pending_for(api, "echo", {"message": "cancel me"}))
        out["scope"].cancel()
    del out["scope"]
    out["final"] = await wait_for("status cancelled", status_is(api, req["id"], "cancelled"), 10)
    out["after"] = await call(s, "get-annotated-message", {"messageType": "success"})
    return out


async def step_progress(s: ClientSession, api: Api, decider: Api) -> dict[str, Any]:
    """A call with a progress token is kept alive past the hold with progress notifications."""
    progress: list[Any] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append({"progress": p, "message": message})

    out: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            out["call"] = await call(s, "echo", {"message": "progress please"}, progress_callback=on_progress)

        tg.start_soon(run)
        req = await wait_for("pending request (progress)", pending_for(api, "echo", {"message": "progress please"}))
        # Longer than --approval-hold-secs: only progress keeps this call open.
        await wait_for("a progress notification", lambda: len(progress) >= 1, 30)
        decider.decide(req["id"], "approve")
    out["progress"] = progress
    out["final"] = api.approval(req["id"])
    return out


async def step_hold(s: ClientSession, api: Api, decider: Api) -> dict[str, Any]:
    """No progress token: after the hold the agent is told to come back; the identical call runs once approved."""
    before = {a["id"] for a in api.approvals()}
    first = await call(s, "echo", {"message": "hold me"})
    reqs = [a for a in api.approvals() if a["id"] not in before]
    out: dict[str, Any] = {"first": first, "requests_after_first": len(reqs)}
    if len(reqs) == 1:
        decider.decide(reqs[0]["id"], "approve")
        # At once, racing the decision on its way control plane -> link -> proxy: the identical
        # call either finds the grant or waits on the same request; it never files a second one.
        out["second"] = await call(s, "echo", {"message": "hold me"})
        out["requests_after_second"] = len([a for a in api.approvals() if a["id"] not in before])
        # One byte different: a new request (not approved; it gets the hold answer again).
        out["different"] = await call(s, "echo", {"message": "hold me!"})
        out["requests_after_different"] = len([a for a in api.approvals() if a["id"] not in before])
        out["final"] = api.approval(reqs[0]["id"])
    return out


async def step_blocked(s: ClientSession, api: Api, decider: Api, args: argparse.Namespace) -> dict[str, Any]:
    """Publishes --next-policy (blocks get-tiny-image) and calls it until the pushed policy refuses it."""
    before = await call(s, "get-tiny-image", {})
    publish(Api(api.base, OWNER), args.next_policy, "e2e: block get-tiny-image")
    deadline = time.monotonic() + 10
    tries = 0
    while True:
        tries += 1
        after = await call(s, "get-tiny-image", {})
        if after.get("is_error") or "error" in after or time.monotonic() > deadline:
            break
        await anyio.sleep(0.2)
    return {"before": before, "after": after, "tries": tries}


STEPS = {
    "approve": step_approve,
    "deny": step_deny,
    "timeout": step_timeout,
    "self": step_self_approval,
    "cancel": step_cancel,
    "progress": step_progress,
    "hold": step_hold,
}


async def mode_approvals(args: argparse.Namespace) -> dict[str, Any]:
    api = Api(args.api, OWNER)
    decider = Api(args.decide_api or args.api, APPROVER)
    params = StdioServerParameters(command=args.server[0], args=args.server[1:], env=None)
    report: dict[str, Any] = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            for step in args.steps.split(","):
                log(f"step {step}")
                if step == "blocked":
                    report[step] = await step_blocked(session, api, decider, args)
                else:
                    report[step] = await STEPS[step](session, api, decider)
    return report


async def mode_stream(args: argparse.Namespace) -> dict[str, Any]:
    """Calls echo --count times as fast as answers come; reports which calls were answered."""
    params = StdioServerParameters(command=args.server[0], args=args.server[1:], env=None)
    answered: list[str] = []
    errors: list[Any] = []
    drained: dict[str, Any] = {}
    started = time.monotonic()
    sent = 0
    try:
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                for i in range(args.count):
                    msg = f"{args.prefix}{i:06d}"
                    sent += 1
                    r = await call(session, "echo", {"message": msg})
                    if r.get("text") == f"Echo: {msg}":
                        answered.append(msg)
                    else:
                        errors.append({"message": msg, "result": r})
                    if args.progress_every and (i + 1) % args.progress_every == 0:
                        print(f"streamed {i + 1}", file=sys.stderr, flush=True)
                if args.drain_data_dir:
                    drained = await drain(args)
    except BaseException as exc:  # noqa: BLE001 - the proxy may be killed under us on purpose
        if not args.tolerate_exit:
            raise
        errors.append({"fatal": f"{type(exc).__name__}: {exc}"})
    secs = round(time.monotonic() - started, 2)
    return {"sent": sent, "answered": answered, "errors": errors, "secs": secs, **drained}


def outbox_depth(proxy: str, data_dir: str) -> int | None:
    r = subprocess.run([proxy, "status", "--json", "--data-dir", data_dir], capture_output=True, timeout=60)
    try:
        return json.loads(r.stdout)["outbox_depth"]
    except (ValueError, KeyError):
        return None


async def drain(args: argparse.Namespace) -> dict[str, Any]:
    """While the session (and so the proxy's link) stays open, waits for an empty outbox."""
    started = time.monotonic()
    while True:
        depth = await anyio.to_thread.run_sync(outbox_depth, args.server[0], args.drain_data_dir)
        if depth == 0:
            return {"drained": True, "drain_secs": round(time.monotonic() - started, 2)}
        if time.monotonic() - started > args.drain_timeout:
            return {"drained": False, "depth": depth}
        await anyio.sleep(0.2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["setup", "publish", "approvals", "stream", "audit"])
    ap.add_argument("--api")
    ap.add_argument("--decide-api", help="the approver decides through this replica")
    ap.add_argument("--setup-token")
    ap.add_argument("--api-token-scopes", help="setup: also create an owner API token with these comma-separated scopes")
    ap.add_argument("--policy")
    ap.add_argument("--next-policy")
    ap.add_argument("--steps", default="")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--prefix", default="m-")
    ap.add_argument("--progress-every", type=int, default=0)
    ap.add_argument("--tolerate-exit", action="store_true")
    ap.add_argument("--drain-data-dir", help="stream: keep the session open until this proxy's outbox is empty")
    ap.add_argument("--drain-timeout", type=float, default=60.0)
    argv = sys.argv[1:]
    server: list[str] = []
    if "--" in argv:
        server = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    args = ap.parse_args(argv)
    args.server = server
    try:
        if args.mode == "setup":
            report = mode_setup(args)
        elif args.mode == "publish":
            report = mode_publish(args)
        elif args.mode == "audit":
            report = mode_audit(args)
        elif args.mode == "approvals":
            report = anyio.run(mode_approvals, args)
        else:
            report = anyio.run(mode_stream, args)
    except BaseException as exc:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        print(json.dumps({"fatal": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(report, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
