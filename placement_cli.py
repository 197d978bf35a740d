"""The ``placement`` command line: the top floor of the house.

Every command is written next to what it runs (``server.commands``,
``simulator.commands``); this module only gathers them under one root.
It may import every layer, and nothing imports it. A new command goes into
the package whose code it runs, and is registered here.
"""

from __future__ import annotations

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
)
app.command()(serve)
app.command()(worker)
app.command()(demo)
app.command("simulate")(simulate)
app.command("replay")(replay)
app.command("import")(import_log)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
