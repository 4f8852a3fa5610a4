"""Fork server for tests/test_interrupted.py: real suite runs, started fast, killed with SIGKILL on request.

Importing torch and transformers costs seconds per process; this server imports them once and runs each
requested pytest run (the real plugin, the real suite, its real results file) in a forked child, so ten
runs killed at random moments fit in a few seconds. One JSON request per stdin line:
  {"args": [pytest args], "processes": 1, "kill_after": seconds or null}
The children start together; any still running after `kill_after` seconds get SIGKILL. One JSON line back:
  {"outcomes": [{"exit": code, "killed": bool, "seconds": s}, ...]}
The server does the killing itself, so it never signals a process id it has already reaped.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any


def _spawn(args: list[str]) -> int:
    pid = os.fork()
    if pid == 0:  # child: a whole pytest run, output discarded, then exit without cleanup of the parent's state
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        try:
            import pytest

            code = int(pytest.main(args))
        except BaseException:
            code = 99
        os._exit(code)
    return pid


def _serve(request: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    pids = [_spawn(request["args"]) for _ in range(request.get("processes", 1))]
    kill_after = request.get("kill_after")
    outcomes: dict[int, dict[str, Any]] = {}
    while len(outcomes) < len(pids):
        elapsed = time.perf_counter() - start
        for pid in pids:
            if pid in outcomes:
                continue
            killed = kill_after is not None and elapsed >= kill_after
            if killed:
                os.kill(pid, signal.SIGKILL)
            done, status = os.waitpid(pid, 0 if killed else os.WNOHANG)
            if done:
                outcomes[pid] = {"exit": os.waitstatus_to_exitcode(status), "seconds": round(elapsed, 3),
                                 "killed": os.waitstatus_to_exitcode(status) == -signal.SIGKILL}
        time.sleep(0.002)
    return {"outcomes": [outcomes[p] for p in pids]}


def main() -> None:
    import gc

    import hypothesis  # noqa: F401  everything a suite run imports, once, before any fork (pytest plugins too)
    import pytest  # noqa: F401
    import pytest_benchmark.plugin  # noqa: F401
    import torch  # noqa: F401
    from transformers import GPT2Config, GPT2LMHeadModel  # noqa: F401  (lazy modules: import them for real)

    import adapters
    import harness.env
    import harness.plugin
    import harness.results
    import harness.targets  # noqa: F401

    adapters.UniversalModelRegistry()  # imports every registered model type's config module
    gc.freeze()  # the children's garbage collections (pytest runs several at exit) skip all of the above
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        print(json.dumps(_serve(json.loads(line))), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main()
