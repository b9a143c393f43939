"""A fresh process that measures one share of a cell: ``python -m rethined_bench.measure.worker`` < job JSON.

Reads ``{"runner", "runner_settings", "artifact", "protocol"}`` on stdin and prints one JSON line: the
:class:`ProcessTiming`, or ``{"error": "..."}`` with exit code 1.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict


def main() -> int:
    job = json.loads(sys.stdin.read())
    try:
        from exporters.base import Artifact

        from ..runners import get_runner
        from .protocol import Protocol, measure_process

        runner = get_runner(job["runner"], **job.get("runner_settings", {}))
        artifact = Artifact.load(job["artifact"])
        timing = measure_process(runner, artifact, Protocol(**job["protocol"]))
    except Exception as exc:  # reported to the parent, which stores the cell as failed with this reason
        print(json.dumps({"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}))
        return 1
    print(json.dumps(asdict(timing)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
