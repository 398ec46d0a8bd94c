"""Interpreter contexts through the integrations, against a real daemon: the MCP `execute`
tool (the SDK's client, both transports) and `SandboxdCodeExecutor(keep_state=True)`."""

from __future__ import annotations

import base64

import mcp_types as types
import pytest
from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock

from sandboxd.integrations.autogen import SandboxdCodeExecutor
from tests.conftest import BACKENDS
from tests.daemon import Daemon
from tests.jail.test_mcp import connect, structured, text

#: The smallest PNG (1x1), shown with IPython's display(): an image result, no matplotlib needed.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
SHOW_PNG = (
    "import base64\nfrom IPython.display import Image, display\n"
    f"display(Image(data=base64.b64decode({base64.b64encode(PNG).decode()!r})))"
)


CASES = [("http", "nsjail"), ("stdio", "nsjail")] + [("http", b) for b in BACKENDS[1:]]


@pytest.mark.parametrize(("transport", "backend"), CASES)
async def test_execute_keeps_state_in_the_sandboxes_context(
    daemon: Daemon, transport: str, backend: str
) -> None:
    async with connect(daemon, transport) as client:
        created = await client.call_tool("create_sandbox", {"backend": backend})
        sbx = structured(created)["id"]
        try:
            first = await client.call_tool(
                "execute", {"sandbox_id": sbx, "code": "x = 6 * 7\nprint('set')"}
            )
            context_id = structured(first)["context_id"]
            second = await client.call_tool("execute", {"sandbox_id": sbx, "code": "x"})
            raised = await client.call_tool(
                "execute", {"sandbox_id": sbx, "context_id": context_id, "code": "1 / 0"}
            )
            shown = await client.call_tool("execute", {"sandbox_id": sbx, "code": SHOW_PNG})
            slow = await client.call_tool(
                "execute",
                {"sandbox_id": sbx, "code": "import time\ntime.sleep(30)", "timeout_s": 1},
            )
        finally:
            await client.call_tool("delete_sandbox", {"sandbox_id": sbx})
    assert text(first).splitlines()[0] == "status: ok"
    assert "--- stdout ---\nset" in text(first)
    assert structured(second)["context_id"] == context_id  # the live context is used again
    assert "--- Out ---\n42" in text(second)
    first_line = text(raised).splitlines()[0]
    assert first_line == "status: error: the code raised ZeroDivisionError: division by zero"
    assert "--- traceback ---" in text(raised)
    assert structured(raised)["error"]["name"] == "ZeroDivisionError"
    assert text(slow).splitlines()[0].startswith("status: timeout: interrupted after 1 s")
    images = [c for c in shown.content if isinstance(c, types.ImageContent)]
    assert [(i.mime_type, base64.b64decode(i.data)) for i in images] == [("image/png", PNG)]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_keep_state_keeps_variables_between_blocks(daemon: Daemon, backend: str) -> None:
    token = CancellationToken()
    async with SandboxdCodeExecutor(
        daemon.url, token=daemon.token, timeout=10, keep_state=True, backend=backend
    ) as ex:
        assigned = await ex.execute_code_blocks([CodeBlock("x = 41", "python")], token)
        used = await ex.execute_code_blocks([CodeBlock("print(x + 1)", "python")], token)
        shell = await ex.execute_code_blocks([CodeBlock("echo from bash", "bash")], token)
        raised = await ex.execute_code_blocks([CodeBlock("1 / 0", "python")], token)
        await ex.restart()
        forgotten = await ex.execute_code_blocks([CodeBlock("print(x)", "python")], token)
    assert (assigned.exit_code, used.exit_code, used.output) == (0, 0, "42\n")
    assert (shell.exit_code, shell.output) == (0, "from bash\n")  # other languages: runs
    assert raised.exit_code == 1 and "ZeroDivisionError" in raised.output
    assert forgotten.exit_code == 1 and "NameError" in forgotten.output
