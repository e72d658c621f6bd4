#!/usr/bin/env python3
"""A scripted "AI agent" for the FlowLink demo (scripts/demo).

It connects to an MCP server command given after `--` (normally flowlink-proxy wrapping
@modelcontextprotocol/server-everything with examples/policies/demo.toml), makes a fixed series of
tool calls an agent might make, and says in plain words what it asked for and what came back:
the result, a block with the policy's message, or a rate limit. When the proxy asks "the user"
to confirm a call (MCP elicitation), this script plays the user and says yes.

    python demo_agent.py -- flowlink-proxy --policy demo.toml -- mcp-server-everything stdio
"""

from __future__ import annotations

import json
import sys
import textwrap
from typing import Any

import anyio
import mcp.types as t
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

AGENT_NAME = "demo-agent"


def say(text: str = "") -> None:
    print(text, flush=True)


def short(text: str, width: int = 110) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= width else one_line[: width - 1] + "…"


def describe(result: t.CallToolResult) -> str:
    parts = []
    for item in result.content:
        if isinstance(item, t.TextContent):
            parts.append(item.text)
        else:
            parts.append(f"[{item.type}]")
    return short(" ".join(parts))


async def confirm_as_user(ctx: Any, params: t.ElicitRequestParams) -> t.ElicitResult:
    message = getattr(params, "message", "")
    say("    ? FlowLink asks the user: " + textwrap.shorten(message, 150))
    say("    ! the user answers: yes, allow it")
    schema = getattr(params, "requested_schema", None) or {}
    content = {k: True for k, p in schema.get("properties", {}).items() if p.get("type") == "boolean"}
    return t.ElicitResult(action="accept", content=content)


async def canned_sampling(ctx: Any, params: t.CreateMessageRequestParams) -> t.CreateMessageResult:
    say("    (the server asked the agent's model for a completion; the demo answers with a canned reply)")
    return t.CreateMessageResult(
        role="assistant", content=t.TextContent(type="text", text="Hi from the demo model."), model="demo-model"
    )


class Agent:
    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self.counts = {"allowed": 0, "blocked": 0, "rate limited": 0, "error": 0}

    async def call(self, why: str, tool: str, arguments: dict[str, Any] | None = None, quiet: bool = False) -> str:
        if not quiet:
            say(f"\n• {why}")
            say(f"  → {tool} {json.dumps(arguments or {})}")

        async def progress(p: float, total: float | None, message: str | None) -> None:
            say(f"    … progress {p:g}/{total:g}" if total else f"    … progress {p:g}")

        try:
            result = await self.session.call_tool(tool, arguments or {}, progress_callback=progress)
        except MCPError as exc:
            err = exc.error
            if err.code == -32002:
                retry = (err.data or {}).get("retryAfterMs") if isinstance(err.data, dict) else None
                say(f"  ⏳ RATE LIMITED: {err.message}" + (f" (retry after {retry} ms)" if retry is not None else ""))
                self.counts["rate limited"] += 1
                return "rate limited"
            say(f"  ✗ ERROR {err.code}: {err.message}")
            self.counts["error"] += 1
            return "error"
        if result.is_error:
            say(f"  ✗ BLOCKED or failed: {describe(result)}")
            self.counts["blocked"] += 1
            return "blocked"
        if not quiet:
            say(f"  ✓ allowed: {describe(result)}")
        self.counts["allowed"] += 1
        return "allowed"


async def run(server: list[str]) -> None:
    params = StdioServerParameters(command=server[0], args=server[1:])
    async with stdio_client(params) as (read, write):
        async with ClientSession(
            read,
            write,
            elicitation_callback=confirm_as_user,
            sampling_callback=canned_sampling,
            client_info=t.Implementation(name=AGENT_NAME, version="1.0.0"),
        ) as session:
            init = await session.initialize()
            info = init.server_info
            say(f"Connected to {info.name} {info.version} (protocol {init.protocol_version}) as agent '{AGENT_NAME}'.")
            tools = [tool.name for tool in (await session.list_tools()).tools]
            say(f"The server offers {len(tools)} tools: {', '.join(tools)}")
            if "get-env" not in tools:
                say("(get-env is not among them: the policy blocks it outright, so FlowLink hides it.)")

            agent = Agent(session)
            await agent.call("Say hello through the echo tool.", "echo", {"message": "hello from the demo agent"})
            await agent.call("Add two numbers.", "get-sum", {"a": 2, "b": 3})
            await agent.call(
                "Try to read the server's environment anyway (an agent may call a tool it was not shown).",
                "get-env",
            )
            await agent.call(
                "Smuggle a destructive shell command through echo.", "echo", {"message": "rm -rf ~/project"}
            )
            say("\n• Hammer get-sum in a tight loop (the policy allows a burst of 5 per second).")
            for i in range(1, 11):
                outcome = await agent.call("", "get-sum", {"a": i, "b": i}, quiet=True)
                say(f"  → get-sum #{i}: {outcome}")
                if outcome == "rate limited":
                    break
            await agent.call(
                "Start a 6-second operation (over 5 s, so the policy wants the user's confirmation).",
                "trigger-long-running-operation",
                {"duration": 6, "steps": 3},
            )
            await agent.call("A 1-second operation needs no confirmation.", "trigger-long-running-operation", {"duration": 1, "steps": 2})
            say(
                "\nSummary: "
                + ", ".join(f"{n} {what}" for what, n in agent.counts.items() if n)
                + "."
            )


def main() -> int:
    args = sys.argv[1:]
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    anyio.run(run, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
