"""Stop a running command-line tool with a signal once it reports a given step (tests and bench/fault_probe.py)."""

from __future__ import annotations

import subprocess
import time


def signal_at_step(process: subprocess.Popen, step: str, number: int, timeout: float | None = None) -> str:
    """Read `process`'s stderr (text) until a line names `step`, send it signal `number` a second later, and
    return everything it wrote to stderr by the time it exits."""
    seen = []
    for line in process.stderr:
        seen.append(line)
        if step in line:
            time.sleep(1.0)
            process.send_signal(number)
            break
    _, rest = process.communicate(timeout=timeout)
    return "".join(seen) + rest
