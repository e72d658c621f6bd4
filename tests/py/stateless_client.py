"""Drives an MCP server with the official Python SDK's `Client` in auto mode: it probes
`server/discover` and speaks the stateless 2026-07-28 revision when the server does.

    python stateless_client.py -- <server command> [args...]

Prints one JSON report on stdout: the negotiated revision, the tool names, the results of a
successful call, a failing call and a resource read."""

import asyncio
import json
import sys

from mcp import Client, StdioServerParameters, types


async def main(cmd: list[str]) -> None:
    params = StdioServerParameters(command=cmd[0], args=cmd[1:])
    info = types.Implementation(name="stateless-client", version="2.0")
    async with Client(params, mode="auto", client_info=info) as c:
        report: dict = {"protocol": getattr(c, "protocol_version", None)}
        tools = await c.list_tools()
        report["tools"] = sorted(t.name for t in tools.tools)
        add = await c.call_tool("add", {"a": 2, "b": 3})
        report["add"] = add.model_dump(mode="json", exclude_none=True)
        fail = await c.call_tool("fail", {"reason": "on purpose"})
        report["fail"] = fail.model_dump(mode="json", exclude_none=True)
        res = await c.read_resource("fixture://greeting")
        report["resource"] = res.model_dump(mode="json", exclude_none=True)
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        sys.exit("usage: stateless_client.py -- <server command> [args...]")
    asyncio.run(main(argv))
