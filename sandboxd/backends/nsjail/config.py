"""nsjail's config text, built so that no request data can break out of a string."""

from __future__ import annotations


def pb_string(value: str) -> str:
    """Quote `value` as a protobuf text-format string: every byte outside printable ASCII,
    and quote and backslash, becomes an octal escape, so no input can break out of it."""
    out = []
    for byte in value.encode("utf-8", errors="surrogateescape"):
        ch = chr(byte)
        out.append(ch if 0x20 <= byte < 0x7F and ch not in '"\\' else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def jail_config(name: str, argv: list[str], env: dict[str, str]) -> bytes:
    """nsjail's config text for one jail: its name, environment and program."""
    lines = [f"name: {pb_string('sandboxd-' + name)}", "mount_proc: true"]
    lines += [f"envar: {pb_string(f'{k}={v}')}" for k, v in env.items()]
    args = " ".join(f"arg: {pb_string(a)}" for a in argv[1:])
    lines.append(f"exec_bin {{ path: {pb_string(argv[0])} {args} }}")
    return ("\n".join(lines) + "\n").encode()
