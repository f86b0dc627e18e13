"""How systemd and Docker read an environment file, for testing ``.env.example`` against them.

systemd: systemd.exec(5), ``EnvironmentFile=``: "newline-separated variable assignments. Empty
lines, lines without an "=" separator, or lines starting with ";" or "#" will be ignored".
The rules below are a line-by-line port of the state machine that implements it,
``parse_env_file_internal`` in systemd's src/basic/env-file.c (read from systemd/systemd at
commit 0002453b): an unquoted value runs to the end of the line (a "#" inside it is *part of the
value*), trailing whitespace is chomped, a backslash escapes the next character (a newline:
continuation), single quotes are verbatim, double quotes unescape only ``"\\`$`` and newline.

Docker: ``docker run --env-file`` reads each line as it is given to ``--env``: lines starting
with "#" are comments, blank lines are skipped, ``KEY=VALUE`` is split at the first "=" and the
value is kept verbatim, quotes included (docs.docker.com, "docker container run", --env-file;
docker/cli#4665 confirms quotes are not stripped). A line without "=" takes the value from the
host environment, which an example file must not rely on, so it is an error here.
"""

from __future__ import annotations

COMMENTS = "#;"
WHITESPACE = " \t\n\r"
NEWLINE = "\n\r"
SHELL_NEED_ESCAPE = '"\\`$'


def parse_systemd(text: str) -> dict[str, str]:
    """The variables systemd's EnvironmentFile= would set from ``text`` (later ones win)."""
    result: dict[str, str] = {}
    state = "PRE_KEY"
    key: list[str] = []
    value: list[str] = []
    last_key_ws: int | None = None
    last_value_ws: int | None = None

    def push(chomp_value: bool) -> None:
        k = "".join(key[:last_key_ws] if last_key_ws is not None else key)
        v = value[:last_value_ws] if chomp_value and last_value_ws is not None else value
        result[k] = "".join(v)

    for c in text:
        if state == "PRE_KEY":
            if c in COMMENTS:
                state = "COMMENT"
            elif c not in WHITESPACE:
                state, last_key_ws, key = "KEY", None, [c]
        elif state == "KEY":
            if c in NEWLINE:
                state, key = "PRE_KEY", []
            elif c == "=":
                state, last_value_ws, value = "PRE_VALUE", None, []
            else:
                if c not in WHITESPACE:
                    last_key_ws = None
                elif last_key_ws is None:
                    last_key_ws = len(key)
                key.append(c)
        elif state == "PRE_VALUE":
            if c in NEWLINE:
                push(chomp_value=False)
                state, key, value = "PRE_KEY", [], []
            elif c == "'":
                state = "SINGLE_QUOTE_VALUE"
            elif c == '"':
                state = "DOUBLE_QUOTE_VALUE"
            elif c == "\\":
                state = "VALUE_ESCAPE"
            elif c not in WHITESPACE:
                state = "VALUE"
                value.append(c)
        elif state == "VALUE":
            if c in NEWLINE:
                push(chomp_value=True)
                state, key, value = "PRE_KEY", [], []
            elif c == "\\":
                state, last_value_ws = "VALUE_ESCAPE", None
            else:
                if c not in WHITESPACE:
                    last_value_ws = None
                elif last_value_ws is None:
                    last_value_ws = len(value)
                value.append(c)
        elif state == "VALUE_ESCAPE":
            state = "VALUE"
            if c not in NEWLINE:  # an escaped newline is eaten up entirely
                value.append(c)
        elif state == "SINGLE_QUOTE_VALUE":
            if c == "'":
                state = "PRE_VALUE"
            else:
                value.append(c)
        elif state == "DOUBLE_QUOTE_VALUE":
            if c == '"':
                state = "PRE_VALUE"
            elif c == "\\":
                state = "DOUBLE_QUOTE_VALUE_ESCAPE"
            else:
                value.append(c)
        elif state == "DOUBLE_QUOTE_VALUE_ESCAPE":
            state = "DOUBLE_QUOTE_VALUE"
            if c in SHELL_NEED_ESCAPE:
                value.append(c)
            elif c != "\n":
                value += ["\\", c]
        elif state == "COMMENT":
            if c == "\\":
                state = "COMMENT_ESCAPE"
            elif c in NEWLINE:
                state = "PRE_KEY"
        elif state == "COMMENT_ESCAPE":
            state = "PRE_KEY" if c in NEWLINE else "COMMENT"
    if state in (
        "PRE_VALUE",
        "VALUE",
        "VALUE_ESCAPE",
        "SINGLE_QUOTE_VALUE",
        "DOUBLE_QUOTE_VALUE",
        "DOUBLE_QUOTE_VALUE_ESCAPE",
    ):
        push(chomp_value=state == "VALUE")
    return result


def parse_docker(text: str) -> dict[str, str]:
    """The variables ``docker run --env-file`` would set from ``text``."""
    result: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ValueError(
                f"line {number}: {name!r} has no '=': Docker would copy the host's value"
            )
        if any(ch in WHITESPACE for ch in name):
            raise ValueError(f"line {number}: variable {name!r} contains whitespace")
        result[name] = value
    return result
