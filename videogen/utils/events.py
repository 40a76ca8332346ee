"""Milestones of a run, for benchmarks that time it from outside the process.

With the environment variable VIDEOGEN_EVENTS set to a file path, `event(name, **fields)`
appends {"event": name, "time": <seconds since the epoch>, **fields} to that file as one
JSON line (e.g. `videogen generate`: "loaded", "first_frame", "done"); without it, nothing
happens. benchmarks/cli_speed.py reads them to measure the time to the first frame.
"""

from __future__ import annotations

import json
import os
import time

ENV = "VIDEOGEN_EVENTS"


def event(name: str, **fields) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"event": name, "time": time.time(), **fields}) + "\n")
