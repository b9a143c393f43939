"""A device reached with the system's OpenSSH client (``ssh`` as a subprocess).

Using the user's own client means ``~/.ssh/config`` (host aliases, ``ProxyJump``, ports, users), agents and keys
work as they do in a terminal. ``BatchMode=yes`` and a connect timeout mean rbench never waits on a password or
host-key prompt: a device it cannot reach is one line saying why, not a hang. Files go to the device through ssh
itself (``cat > path``), which needs nothing there but a shell: no SFTP or SCP subsystem.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import RbenchError

SSH_FAILURE = 255  # ssh's own exit status: connection, authentication or host-key failure


class RemoteError(RbenchError):
    """A remote command could not run or failed: the message is one line for the cell's reason."""


@dataclass(frozen=True)
class SshHost:
    """Where and how to reach the device; empty fields leave the choice to ssh (and ``~/.ssh/config``)."""

    host: str
    user: str = ""
    port: int | None = None
    key_file: str = ""
    config_file: str = ""
    connect_timeout_s: int = 10

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def ssh_command(self, remote: str) -> list[str]:
        """The ``ssh`` argv that runs the shell command ``remote`` on the device."""
        options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout_s}"]
        if self.config_file:
            options += ["-F", self.config_file]
        if self.port is not None:
            options += ["-p", str(self.port)]
        if self.key_file:
            options += ["-i", self.key_file]
        if self.user:
            options += ["-l", self.user]
        return ["ssh", *options, self.host, "--", remote]

    def run(self, remote: str, *, timeout_s: float, check: bool = True, stdin: Path | None = None
            ) -> subprocess.CompletedProcess:
        """Run ``remote`` on the device (with a local file as its standard input); ssh's own failures (exit 255)
        always raise, the command's only with ``check``."""
        done = _run(self.ssh_command(remote), timeout_s, f"{self.label}: `{_short(remote)}`", stdin)
        if done.returncode == SSH_FAILURE:
            raise RemoteError(f"ssh {self.label}: {_last_line(done.stderr) or 'connection failed'}")
        if check and done.returncode:
            raise RemoteError(f"{self.label}: `{_short(remote)}` exited with {done.returncode}: "
                              f"{_last_line(done.stderr) or _last_line(done.stdout) or 'no output'}")
        return done

    def put(self, local: Path, remote: str, *, timeout_s: float) -> None:
        """Copy a local file to the device (written under a temporary name, then renamed: never half a file)."""
        partial = f"{remote}.partial"
        self.run(f"cat > {shlex.quote(partial)} && mv -f {shlex.quote(partial)} {shlex.quote(remote)}",
                 timeout_s=timeout_s, stdin=local)

    def read(self, remote: str, *, timeout_s: float) -> str:
        """The text of a file on the device."""
        return self.run(f"cat {shlex.quote(remote)}", timeout_s=timeout_s).stdout


def quote(argv: Sequence[str]) -> str:
    """A shell command line from an argv, quoted for the device's shell."""
    return " ".join(shlex.quote(part) for part in argv)


def _run(argv: list[str], timeout_s: float, what: str, stdin: Path | None = None) -> subprocess.CompletedProcess:
    try:
        if stdin is None:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        with stdin.open("rb") as source:
            done = subprocess.run(argv, capture_output=True, timeout=timeout_s, stdin=source)
        return subprocess.CompletedProcess(argv, done.returncode, done.stdout.decode(errors="replace"),
                                           done.stderr.decode(errors="replace"))
    except subprocess.TimeoutExpired as exc:
        raise RemoteError(f"{what} timed out after {timeout_s:.0f} s") from exc
    except FileNotFoundError as exc:
        raise RemoteError(f"{argv[0]} is not installed; install the OpenSSH client") from exc


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _short(command: str, limit: int = 80) -> str:
    return command if len(command) <= limit else command[: limit - 1] + "…"
