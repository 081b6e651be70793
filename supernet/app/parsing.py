"""Command-line parsing shared by the ``attnas`` commands: one line from a jsonargparse
error (:func:`parse_error_line`) and :class:`OneLineParser`, a jsonargparse parser whose
usage errors raise ``ValueError`` with that one line (the command prints it and exits 2).
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from jsonargparse import ArgumentParser

__all__ = ["OneLineParser", "parse_error_line"]


def parse_error_line(message: str) -> str:
    """One line from a jsonargparse error: the option, the value given and, for a choice,
    the accepted values (``--trainer.precision: 'bogus' is not accepted; accepted: ...``)."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    head = re.match(r'Parser key "([^"]+)":?', lines[0]) if lines else None
    if head is None:
        return " ".join(lines)[:300]
    key = head.group(1)
    given = next((ln.split(":", 1)[1].strip() for ln in lines
                  if ln.startswith("Given value:")), None)
    if given is None:
        got = re.search(r"Got value: (.*)$", message.strip().splitlines()[-1])
        given = got.group(1).strip() if got else None
    literals: list[str] = []
    for chunk in re.findall(r"Literal\[([^\]]*)\]", message):
        for item in chunk.split(","):
            item = item.strip().strip("'\"")
            if item and item not in literals:
                literals.append(item)
    if literals:
        return (f"--{key}: {given!r} is not accepted; accepted: {', '.join(literals)}"
                if given is not None else f"--{key}: accepted: {', '.join(literals)}")
    want = re.sub(r"<class '([^']+)'>", r"\1", lines[1] if len(lines) > 1 else "")
    want = want.split(". Got value")[0]
    return f"--{key}: {given!r} is not valid ({want})" if given is not None else \
        f"--{key}: {want}"


class OneLineParser(ArgumentParser):
    """A jsonargparse parser with argparse's plain help layout whose usage errors raise
    ``ValueError(one line)``, naming the option as it is typed (``--val-batches``).

    Args:
        *args, **kwargs: as for :class:`jsonargparse.ArgumentParser`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> None:  # noqa: D102
        line = parse_error_line(message)
        required = "the following arguments are required: "
        for action in self._actions:  # jsonargparse's keys -> the options as typed
            if not action.option_strings:
                continue
            if line.startswith(f"--{action.dest}:"):  # --val_batches -> --val-batches
                line = action.option_strings[-1] + line[len(action.dest) + 2:]
            if line.startswith(required):  # out -> -o/--out, as argparse says
                names = [n.strip() for n in line[len(required):].split(",")]
                line = required + ", ".join("/".join(action.option_strings)
                                            if n == action.dest else n for n in names)
        raise ValueError(line)
