"""The ``placement`` command line: the top floor of the house.

Every command is written next to what it runs (``server.commands``,
``simulator.commands``); this module only gathers them under one root.
It may import every layer, and nothing imports it. A new command goes into
the package whose code it runs, and is registered here.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Callable

import typer

from server.commands import serve, worker
from simulator.commands.demo import demo
from simulator.commands.import_log import import_log
from simulator.commands.replay import replay
from simulator.commands.simulate import simulate

app = typer.Typer(
    help="Contextual-bandit placement engine: decide which collection goes into which slot, "
         "learn from rewards, evaluate policies offline.",
    no_args_is_help=True,
    add_completion=False,
    # Plain (click) help: it wraps between words at any width and never cuts
    # a long word, where rich's option table does at 80 columns.
    rich_markup_mode=None,
)


def _help(command: Callable[..., None]) -> str:
    """A command's docstring as paragraphs: the source's line breaks are not
    the terminal's (rich wraps each paragraph to the width it has)."""
    doc = inspect.cleandoc(command.__doc__ or "")
    return "\n\n".join(" ".join(p.split()) for p in doc.split("\n\n"))


for name, command in (("serve", serve), ("worker", worker), ("demo", demo), ("simulate", simulate),
                      ("replay", replay), ("import", import_log)):
    text = _help(command)
    first = text.split(". ")[0].split(": ")[0].split(" (")[0].rstrip(".")
    app.command(name, help=text, short_help=first)(command)


def _user_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings meant for the person at the terminal (a deprecated spelling)
    read as a sentence, not as a source location."""
    return f"warning: {message}\n"


warnings.formatwarning = _user_warning


def main() -> None:
    app()


if __name__ == "__main__":
    main()
