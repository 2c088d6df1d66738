"""Long-running child processes of the local clusters (:mod:`.cluster`): free ports, waiting with a
deadline, each daemon in its own process session (so stopping it ends exactly its processes), and the
processes of a session or mentioning a folder, read from Linux ``/proc``."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class ClusterError(RuntimeError):
    """A cluster process that would not start or stop in time (the message names its log file)."""


# -- small pure helpers ----------------------------------------------------------------------------
def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], Any], timeout: float, what: str, *, interval: float = 0.3,
               alive: Callable[[], str | None] | None = None) -> Any:
    """Call ``check`` until it returns something truthy; :class:`ClusterError` after ``timeout`` s.

    ``alive`` returns a message when a process the wait depends on has died (then no point waiting)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        dead = alive() if alive else None
        if dead:
            raise ClusterError(f"{what}: {dead}")
        if time.monotonic() > deadline:
            raise ClusterError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def session_pids(sids: set[int]) -> list[int]:
    """Processes (Linux ``/proc``) whose session id is one of ``sids``: what a ``start_new_session``
    child and everything it started (and did not move to a new session) still run."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session ...
        if len(fields) > 3 and int(fields[3]) in sids and fields[0] != "Z":
            out.append(int(entry.name))
    return sorted(out)


def pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (a cluster's own temp folder names its processes)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            out.append(int(entry.name))
    return sorted(out)


def signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def log_tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


class Daemon:
    """One long-running child in its own session, its output in a log file."""

    def __init__(self, name: str, cmd: list[str], log_file: Path, env: dict[str, str]) -> None:
        self.name, self.cmd, self.log_file = name, cmd, log_file
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        log.info("%s started (pid %d): %s", name, self.proc.pid, " ".join(cmd))

    def died(self) -> str | None:
        """A message when the process has exited (with its log's tail), else None."""
        rc = self.proc.poll()
        if rc is None:
            return None
        return f"{self.name} exited with status {rc}; {self.log_file}:\n{log_tail(self.log_file)}"

    def pids(self) -> list[int]:
        """This daemon's processes still running (its whole session)."""
        return session_pids({self.proc.pid})

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM); :meth:`stop` waits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float) -> None:
        """SIGTERM, wait ``timeout`` s, then SIGKILL whatever of its session is left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) did not stop in %.0f s: killing it", self.name, self.proc.pid, timeout)
        left = self.pids()
        if left:
            signal_pids(left, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


__all__ = ["LOOPBACK", "ClusterError", "Daemon", "free_port", "log_tail", "pids_mentioning", "port_open",
           "session_pids", "signal_pids", "wait_until"]
