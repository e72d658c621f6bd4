//! MCP guardrails (being written).
