"""coder's test harness lives in `coder.testing.harness` (tests and bench share it); this
module keeps the tests' imports working."""

from coder.testing.harness import (
    FIXTURES,
    REPO,
    ScriptedServer,
    coder_env,
    example,
    run_coder,
    run_solve,
    scripted,
    solve,
    write_config,
)

__all__ = [
    "FIXTURES",
    "REPO",
    "ScriptedServer",
    "coder_env",
    "example",
    "run_coder",
    "run_solve",
    "scripted",
    "solve",
    "write_config",
]
