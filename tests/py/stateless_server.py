"""An MCP server built on the official Python SDK's MCPServer, which speaks the stateless
2026-07-28 revision (server/discover, per-request _meta, resultType) as well as the older ones.
Used by tests/tests/stateless.rs."""

from mcp.server.mcpserver import MCPServer

app = MCPServer("stateless-fixture", version="1.0")


@app.tool()
def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


@app.tool()
def fail(reason: str) -> str:
    """Always fails with a tool error."""
    raise ValueError(reason)


@app.resource("fixture://greeting")
def greeting() -> str:
    return "hello from a stateless server"


if __name__ == "__main__":
    app.run()
