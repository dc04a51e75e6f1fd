"""The parent's side of long-lived benchmark workers (`common.serve_worker` is the other).

A worker is a subprocess in its own process group that answers JSON lines on stdout; its
stderr goes to a log file, whose last line explains an early exit. Every failure (an error
answer, an exit, no answer in time) raises `WorkerError` with one line, and `kill` ends the
whole group, so nothing is left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any


class WorkerError(RuntimeError):
    """A worker failed, exited or timed out; the message is one line."""


class Worker:
    """A worker subprocess spoken to in JSON lines; its stderr goes to a log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path, timeout):
        self.name, self.log, self.timeout = name, log, timeout
        self._buffer = b""
        with open(log, "wb") as stderr:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                start_new_session=True,  # its own process group: killed with its threads
            )

    def request(self, message: dict[str, Any] | None) -> dict[str, Any]:
        """Send `message` (None: only read) and return the answer, or raise WorkerError."""
        if message is not None:
            try:
                self.process.stdin.write((json.dumps(message) + "\n").encode())
                self.process.stdin.flush()
            except BrokenPipeError:
                raise WorkerError(self._exit_text()) from None
        deadline = time.monotonic() + self.timeout
        stdout = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stdout], [], [], left)[0]:
                self.kill()
                raise WorkerError(f"{self.name} gave no answer within {self.timeout} s; killed")
            chunk = os.read(stdout, 1 << 16)
            if not chunk:
                raise WorkerError(self._exit_text())
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer = json.loads(line)
        if "error" in answer:
            raise WorkerError(f"{self.name} failed: {answer['error']}")
        return answer

    def _exit_text(self) -> str:
        code = self.process.wait()
        lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        last = f": {lines[-1].strip()[:300]}" if lines else ""
        return f"{self.name} exited with code {code} before answering{last}"

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(b'{"op": "quit"}\n')
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def wait_ready(workers: dict[str, Worker], timeout: float) -> dict[str, dict[str, Any]]:
    """Each worker's "ready" answer, taken as they come, so a failing one is heard at once."""
    pending = {w.process.stdout.fileno(): name for name, w in workers.items()}
    ready: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while pending:
        left = max(deadline - time.monotonic(), 0)
        readable = select.select(list(pending), [], [], left)[0]
        if not readable:
            late = [workers[name] for name in pending.values()]
            for worker in late:
                worker.kill()
            names = ", ".join(worker.name for worker in late)
            raise WorkerError(f"not ready within {timeout} s, killed: {names}")
        for fd in readable:
            name = pending.pop(fd)
            ready[name] = workers[name].request(None)
    return {name: ready[name] for name in workers}
