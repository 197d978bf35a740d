"""What every benchmark does with its results: raw numbers to JSON (not
committed), Markdown tables to stdout, progress to stderr."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def publish(results: dict[str, Any], json_out: Path, markdown: Callable[[dict[str, Any]], str]) -> int:
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    log(f"raw numbers: {json_out}")
    return 0
