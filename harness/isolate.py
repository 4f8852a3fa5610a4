"""Run one measurement in a fresh Python process.

Why: a process's allocator keeps the history of everything it ever did (freed arenas, cached CUDA
blocks, lazily imported model code). Memory and reclamation figures are only comparable when each starts
from a clean interpreter, so the suites call `run_isolated("pkg.mod:function", {...}, timeout=...)`.

Protocol: the child is `sys.executable -m harness.isolate RESULT_FILE`; it reads
`{"target": ..., "kwargs": ...}` as JSON on stdin, calls `module:function(**kwargs)`, and writes
`{"ok": true, "result": {...}}` (or `{"ok": false, "error": ..., "traceback": ...}`) to RESULT_FILE.
The result travels through a file, never stdout, because libraries print to stdout freely.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

__all__ = ["IsolatedError", "run_isolated"]

_REPO_ROOT = Path(__file__).resolve().parent.parent
_TAIL = 4000


class IsolatedError(RuntimeError):
    """The child failed: non-zero exit, timeout, or an unreadable result. Carries the stderr tail."""

    def __init__(
        self,
        message: str,
        *,
        target: str,
        returncode: int | None = None,
        stderr_tail: str = "",
        timed_out: bool = False,
    ) -> None:
        self.target = target
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.timed_out = timed_out
        full = f"{target}: {message}"
        if stderr_tail:
            full += f"\n--- child stderr (tail) ---\n{stderr_tail}"
        super().__init__(full)


def _tail(b: bytes | str | None) -> str:
    if not b:
        return ""
    s = b.decode("utf-8", "replace") if isinstance(b, bytes) else b
    return s[-_TAIL:]


def _resolve(target: str) -> Any:
    mod_name, sep, fn_name = target.partition(":")
    if not sep or not mod_name or not fn_name:
        raise ValueError(f"target must look like 'package.module:function', got {target!r}")
    obj: Any = importlib.import_module(mod_name)
    for part in fn_name.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child and anything it spawned (it leads its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        proc.kill()


def run_isolated(target: str, kwargs: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Call `module:function(**kwargs)` in a fresh interpreter and return the dict it returned.

    kwargs and the result must be JSON-serialisable (a TypeError is raised here for bad kwargs).
    The environment passes through; the child's cwd is ours, and the repo root is prepended to
    PYTHONPATH so `harness` and `adapters` import from this checkout whatever the cwd.
    Raises IsolatedError on non-zero exit, timeout or a missing/bad result file.
    """
    if ":" not in target:
        raise ValueError(f"target must look like 'package.module:function', got {target!r}")
    payload = json.dumps({"target": target, "kwargs": kwargs}, allow_nan=False).encode()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryDirectory(prefix="harness-isolate-") as tmp:
        result_file = Path(tmp) / "result.json"
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.isolate", str(result_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=os.getcwd(),
            env=env,
            start_new_session=True,
        )
        try:
            _out, err = proc.communicate(payload, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            _out, err = proc.communicate()
            raise IsolatedError(
                f"timed out after {timeout:g} s", target=target, stderr_tail=_tail(err), timed_out=True
            ) from None
        except BaseException:  # e.g. Ctrl-C: the child leads its own session, so it must be killed here
            _kill_group(proc)
            proc.wait()
            raise
        envelope: Any = None
        read_problem = ""
        try:
            envelope = json.loads(result_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            read_problem = "no result file written"
        except (OSError, ValueError) as e:
            read_problem = f"unreadable result file: {e}"
        if isinstance(envelope, dict) and envelope.get("ok") is False:
            raise IsolatedError(
                f"raised {envelope.get('error')}",
                target=target,
                returncode=proc.returncode,
                stderr_tail=_tail(err) or _tail(envelope.get("traceback")),
            )
        if proc.returncode != 0:
            raise IsolatedError(
                f"child exited with status {proc.returncode}" + (f" ({read_problem})" if read_problem else ""),
                target=target,
                returncode=proc.returncode,
                stderr_tail=_tail(err),
            )
        if read_problem:
            raise IsolatedError(read_problem, target=target, returncode=0, stderr_tail=_tail(err))
        if not isinstance(envelope, dict) or not isinstance(envelope.get("result"), dict):
            raise IsolatedError("result file is not {'ok': true, 'result': {...}}", target=target)
        return envelope["result"]


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)


def _child_main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m harness.isolate RESULT_FILE  (JSON request on stdin)", file=sys.stderr)
        return 2
    result_file = Path(argv[0])
    try:
        request = json.loads(sys.stdin.buffer.read())
        fn = _resolve(request["target"])
        result = fn(**request.get("kwargs", {}))
        if not isinstance(result, dict):
            raise TypeError(f"{request['target']} returned {type(result).__name__}, expected dict")
        _write_json(result_file, {"ok": True, "result": result})
    except BaseException as e:  # report everything, including SystemExit from the target
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        sys.stderr.flush()
        with contextlib.suppress(Exception):
            _write_json(result_file, {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": tb})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
