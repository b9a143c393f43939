"""A fresh process that measures one share of a cell: ``python -m rethined_bench.runners.worker`` < job JSON.

Reads ``{"runner": "module:Class", "settings", "device", "prepared", "protocol"}`` on stdin and prints one JSON line,
``{"record": ProcessRecord, "settings": runner.describe()}``, or ``{"error": "..."}`` with exit code 1.
"""

from __future__ import annotations

import importlib
import json
import sys


def main() -> int:
    job = json.loads(sys.stdin.read())
    try:
        from ..measure.protocol import Protocol, measure_process
        from .base import Prepared

        module, name = job["runner"].split(":")
        cls = getattr(importlib.import_module(module), name)
        runner = cls(cls.settings_class(**job["settings"]), device=job["device"])
        record = measure_process(runner, Prepared.from_dict(job["prepared"]), Protocol(**job["protocol"]))
    except Exception as exc:  # reported to the parent, which stores the cell as failed with this reason
        print(json.dumps({"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}))
        return 1
    print(json.dumps({"record": record.to_dict(), "settings": runner.describe()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
