"""``orchestrate mcp``: the workspace's sessions as MCP tools, for other tools to drive."""
