"""Where agents already are: sandboxd as an MCP server (`mcp_tools`, `mcp`) and as an AutoGen
code executor (`autogen`). Clients of the daemon, like `sandboxd.client`: they see its HTTP
API only (the wire models and errors), never its internals.
"""
