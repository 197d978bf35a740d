"""Progress reporting seam of a replay: silent by default; the command line
passes a rich one (:class:`simulator.replay.report.RichProgress`)."""

from __future__ import annotations

from typing import Any, Callable

Progress = Callable[[int], None]


class ProgressSink:
    """Progress reporting seam: silent by default; the CLI passes a rich one."""

    def task(self, description: str, total: int) -> "_Task":
        return _Task()


class _Task:
    def __enter__(self) -> Progress:
        return lambda n: None

    def __exit__(self, *exc: Any) -> None:
        pass

