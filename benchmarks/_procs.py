"""Start the benchmark server process and read CPU use of processes we started.

All times are in seconds.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import sys
import tempfile
import time
from typing import IO, Any

from benchmarks._common import REPO_ROOT, child_env, parse_child_result

__all__ = ["BenchServer", "children_of", "cpu_seconds"]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """Return the CPU time (user + system) used so far by process ``pid``, from ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime and stime, fields 14 and 15


def children_of(pid: int) -> list[int]:
    """Return the PIDs whose parent is ``pid`` (Linux ``/proc``; empty elsewhere)."""
    kids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


class BenchServer:
    """``python -m benchmarks._serve`` in a child process, stopped by closing its stdin.

    Use it as a context manager. Start-up (synthetic data, one model build)
    is bounded by ``start_timeout``; on exit the server gets 20 s to stop and
    is then killed by its PID, together with any build process it started.

    Attributes:
        info: What the server printed: ``ports``, ``pid``, sizes, set-up times.
    """

    def __init__(self, shape: str, variants: list[str], *, start_timeout: float = 300.0) -> None:
        self.shape = shape
        self.variants = variants
        self.start_timeout = start_timeout
        self.info: dict[str, Any] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None

    @property
    def pid(self) -> int:
        """The server's PID."""
        assert self._proc is not None
        return self._proc.pid

    def url(self, variant: str) -> str:
        """Return the base URL of one variant's server."""
        return f"http://127.0.0.1:{self.info['ports'][variant]}"

    def __enter__(self) -> BenchServer:
        cmd = [sys.executable, "-m", "benchmarks._serve", "--shape", self.shape]
        cmd += ["--variants", ",".join(self.variants)]
        self._stderr = tempfile.TemporaryFile("w+")  # a pipe nobody reads could fill up
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=REPO_ROOT,
            env=child_env(),
        )
        try:
            self.info = self._read_ready()
        except BaseException:
            self.close()
            raise
        return self

    def _read_ready(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self._proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
                    continue
                line = self._proc.stdout.readline()
                if not line:  # the server died
                    msg = f"benchmark server for {self.shape} died: {self.stderr_tail()}"
                    raise RuntimeError(msg)
                info = parse_child_result(line)
                if info is not None:
                    return info
        msg = f"benchmark server for {self.shape} did not start in {self.start_timeout:.0f} s"
        raise RuntimeError(msg)

    def stderr_tail(self, chars: int = 500) -> str:
        """Return the end of what the server wrote to stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        text: str = self._stderr.read()
        return text.strip()[-chars:]

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server (and a build process it left behind); safe to call twice."""
        proc = self._proc
        if proc is None:
            return
        kids = children_of(proc.pid)
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own child, by PID
            proc.wait(timeout=10)
        finally:
            for pid in kids:  # a build process the server started, if it outlived the server
                if _is_build_process(pid):
                    with contextlib.suppress(OSError):  # it ended meanwhile
                        os.kill(pid, 9)
            if proc.stdout:
                proc.stdout.close()
            if self._stderr is not None:
                self._stderr.close()
            self._proc = self._stderr = None


def _is_build_process(pid: int) -> bool:
    """Whether ``pid`` still runs a multiprocessing child (a process-executor build)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"multiprocessing" in cmdline.read()
    except OSError:
        return False
