"""A throwaway PostgreSQL server for the tests and the benchmark: initdb and pg_ctl in a temp dir.

Debian's ``postgresql`` package provides the binaries (``/usr/lib/postgresql/N/bin``);
nothing else on the machine is touched: the cluster lives in a temporary
directory, listens on one loopback port (and a Unix socket in that directory),
and is deleted when the context ends. ``initdb`` refuses to run as root, so
as root the server runs as the ``postgres`` system user the package creates
(``runuser -u postgres --``).

    with ThrowawayPostgres() as pg:
        url = pg.create_database("ratings")   # postgresql://postgres@127.0.0.1:PORT/ratings

``why_unavailable()`` says why a cluster cannot be had here (the tests skip
with that reason), or returns None.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

__all__ = ["ThrowawayPostgres", "postgres_bin", "why_unavailable"]

_USER = "postgres"  # the database superuser, and as root the system user that runs the server


def postgres_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (PATH first, then the newest Debian version)."""
    found = shutil.which("initdb")
    if found is not None and shutil.which("pg_ctl") is not None:
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def why_unavailable() -> str | None:
    """Why no throwaway cluster can be started here, in one sentence; None when one can."""
    if postgres_bin() is None:
        return "no initdb/pg_ctl found (apt-get install postgresql)"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root without runuser, and initdb refuses to run as root"
        try:
            import pwd

            pwd.getpwnam(_USER)
        except KeyError:
            return "running as root and there is no 'postgres' system user to run the server"
    with contextlib.suppress(ImportError):
        import psycopg  # noqa: F401

        return None
    return "psycopg is not installed (pip install 'labsupport[postgres]')"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayPostgres:
    """One PostgreSQL cluster in a temporary directory, on a free loopback port.

    ``stop()`` and ``start()`` may be called again (the data stays): the
    tests use them to take the server away under a running service.

    Args:
        port: The TCP port; a free one by default.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self._bin = postgres_bin()
        self._dir: Path | None = None
        self._names = itertools.count(1)

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` database (the cluster's default)."""
        return self.url_of("postgres")

    def url_of(self, database: str) -> str:
        """The URL of one database of the cluster."""
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", _USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            msg = f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr or done.stdout}"
            raise RuntimeError(msg)

    def __enter__(self) -> ThrowawayPostgres:
        reason = why_unavailable()  # no binaries, no user to run them as, or no psycopg
        if reason is not None or self._bin is None:
            raise RuntimeError(reason)
        self._dir = Path(tempfile.mkdtemp(prefix="labsupport-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self._dir, user=_USER)
        try:
            self._run(
                str(self._bin / "initdb"),
                "-D",
                str(self._dir / "data"),
                "-U",
                _USER,
                "-A",
                "trust",  # loopback and a private socket only: no passwords
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
            self.start()
        except BaseException:
            self._remove()
            raise
        return self

    def start(self) -> None:
        """Start the server (again) and wait until it accepts connections."""
        assert self._dir is not None, "use ThrowawayPostgres as a context manager"
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self._dir}",
                # a test cluster: nothing here must survive a power cut, only a
                # crash of the clients, which committed transactions always do
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c max_connections=100",
            ]
        )
        self._run(
            str(self._bin / "pg_ctl"),
            "-D",
            str(self._dir / "data"),
            "-l",
            str(self._dir / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: end the sessions, then shut down cleanly)."""
        assert self._dir is not None
        data = str(self._dir / "data")
        self._run(str(self._bin / "pg_ctl"), "-D", data, "-m", mode, "-w", "stop")

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its URL (a fresh name by default)."""
        import psycopg

        database = name or f"test_{next(self._names)}"
        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{database}"')
        return self.url_of(database)

    def _remove(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        self._remove()
