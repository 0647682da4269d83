"""`PostgresStore`: movies, ratings and task records in a PostgreSQL server.

The store a deployment uses when API processes and workers run on different
machines: each opens the same `postgresql://` URL, and nothing else is shared.
It keeps the guarantees of `SQLiteStore`: a rating is committed before the
call returns, writers never lose each other's rows, and a rebuild re-reads
only the ratings written since the last one.

How it is built:

- A `psycopg_pool.ConnectionPool` (one to `max_size` connections) serves
  every thread; each connection is checked before it is handed out, so after
  the server restarts the first request gets a fresh connection instead of a
  dead one.
- The incremental read needs a change counter that a reader can trust: a
  row `counters.ratings_version`, bumped inside each write's transaction, and
  each rating row keeps the value it was written at (`seq`). Updating one row
  serialises the writers' commits in counter order, so a reader that sees
  version v also sees every row with `seq <= v`. A sequence would not do:
  `nextval` is not transactional, so a write holding a lower number can
  commit after a reader has moved past it, and that row is never read.
- Bulk loads use `COPY` in PostgreSQL's binary format, built by numpy;
  reads have the server pack the rows into `bytea` chunks that numpy reads
  as they are. Neither makes a Python object per rating.
- The schema is created, or migrated, when the store opens, under an
  advisory lock, so any number of processes may start at once.
- A server that is down or goes away raises `StoreUnavailableError`: the API
  answers `503` with `Retry-After`, and the next call after the server is back
  succeeds.
"""

from __future__ import annotations

import json
import operator
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt

from labsupport._types import Movie, RatingArrays
from labsupport.store.base import (
    _MERGE_MAX_SHARE,
    MissingPostgresError,
    Store,
    StoreUnavailableError,
    _check_page,
    _checked_columns,
    _checked_rating,
    _merge_sorted,
    _row,
    _task_json,
    _unknown_movie,
)

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
    msg = "a postgresql:// store needs psycopg and psycopg-pool: pip install 'labsupport[postgres]'"
    raise MissingPostgresError(msg) from exc

__all__ = ["PostgresStore", "describe_url"]

# Each migration runs once, in order, in one transaction; the schema's version is
# the number of migrations applied. Add new ones at the end, never edit old ones.
_MIGRATIONS = (
    """
    CREATE TABLE movies (
        id BIGINT PRIMARY KEY, title TEXT NOT NULL, year INTEGER NOT NULL, genre TEXT NOT NULL
    );
    CREATE TABLE ratings (
        user_id BIGINT NOT NULL, movie_id BIGINT NOT NULL, score DOUBLE PRECISION NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (user_id, movie_id)
    );
    CREATE INDEX ratings_by_seq ON ratings (seq);
    CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY, seq BIGINT GENERATED ALWAYS AS IDENTITY, data TEXT NOT NULL
    );
    CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
    INSERT INTO counters VALUES ('ratings_version', 0);
    CREATE TABLE writes (version BIGINT PRIMARY KEY, written_at DOUBLE PRECISION NOT NULL);
    """,
)
_MIGRATION_LOCK = 0x6C61_6273  # any constant: the advisory lock all starting processes take
_BUMP_VERSION = (
    "UPDATE counters SET value = value + %s WHERE name = 'ratings_version' RETURNING value"
)
_UPSERT = "ON CONFLICT (user_id, movie_id) DO UPDATE SET score = EXCLUDED.score, seq = EXCLUDED.seq"
_LOG_WRITE = (
    "INSERT INTO writes (version, written_at) VALUES (%s, %s) "
    "ON CONFLICT (version) DO UPDATE SET written_at = EXCLUDED.written_at"
)
_VERSION = "SELECT value FROM counters WHERE name = 'ratings_version'"
_ALL_RATINGS = "SELECT user_id, movie_id, score FROM ratings ORDER BY user_id, movie_id"

# writes: PostgreSQL's binary COPY format: a header, then per row a 16-bit field
# count and, per field, a 32-bit length and the value, big-endian; then a -1
# trailer. Three NOT NULL 8-byte fields make every row 38 bytes.
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_COPY_HEADER = _COPY_SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"
_COPY_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("user_len", ">i4"),
        ("user_id", ">i8"),
        ("movie_len", ">i4"),
        ("movie_id", ">i8"),
        ("score_len", ">i4"),
        ("score", ">f8"),
    ]
)
# reads: chunks of rows packed into one bytea each (see _fetch_columns)
_PACKED_ROW = np.dtype([("user_id", ">i8"), ("movie_id", ">i8"), ("score", ">f8")])
_CHUNK_ROWS = 2_000_000
_CHUNK = (
    "SELECT string_agg(int8send(user_id) || int8send(movie_id) || float8send(score), ''::bytea) "
    "FROM (SELECT user_id, movie_id, score FROM ratings WHERE ({where}) AND {after} "
    "ORDER BY user_id, movie_id LIMIT %s) AS chunk"
)
# the SQLSTATE classes of a server out of reach: connection exceptions (08),
# and shutdown or start-up in progress (57P01 to 57P03)
_OUTAGE_STATES = ("08", "57P01", "57P02", "57P03")


def describe_url(url: str) -> str:
    """A PostgreSQL URL as `user@host:port/db`, without its password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "an unparsable PostgreSQL URL"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host, port = parts.get("host", "localhost"), parts.get("port", 5432)
    return f"{user}{host}:{port}/{parts.get('dbname', '')}"


def _copy_in(
    users: npt.NDArray[np.int64], movies: npt.NDArray[np.int64], scores: npt.NDArray[np.float64]
) -> bytes:
    """The binary `COPY ... FROM STDIN` stream of these rating columns, built by numpy."""
    table = np.empty(len(users), dtype=_COPY_ROW)
    table["fields"] = 3
    table["user_len"] = table["movie_len"] = table["score_len"] = 8
    table["user_id"], table["movie_id"], table["score"] = users, movies, scores
    return _COPY_HEADER + table.tobytes() + _COPY_TRAILER


def _last_of_each_pair(
    users: npt.NDArray[np.int64], movies: npt.NDArray[np.int64]
) -> npt.NDArray[np.intp]:
    """Indices that sort the batch by (user, movie), keeping only a pair's last occurrence.

    One `INSERT ... ON CONFLICT` may not touch a row twice, and the contract
    says the last score of a repeated pair wins.
    """
    order = np.lexsort((movies, users))  # stable: a pair's repeats keep their order
    u, m = users[order], movies[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = (u[1:] != u[:-1]) | (m[1:] != m[:-1])
    return order[last]


class PostgresStore(Store):
    """Keep everything in a PostgreSQL database; any number of processes may share it.

    Every method is one transaction on a pooled connection, committed before it
    returns. Methods are documented on `Store`; any of them may raise
    `StoreUnavailableError` while the server is out of reach.

    Args:
        url: `postgresql://user[:password]@host:port/dbname` (any libpq
            connection string works); the database must exist, the tables are
            created in it.
        max_size: Most connections this process opens.
        timeout: Seconds a call waits for a connection before it gives up
            with `StoreUnavailableError` (the server is down, or every
            connection is busy for that long).

    Raises:
        StoreUnavailableError: No server answers at `url`.
    """

    def __init__(self, url: str, *, max_size: int = 8, timeout: float = 2.0) -> None:
        self.url = url
        self._where = describe_url(url)
        self._lock = threading.Lock()  # guards the cached columns only
        self._columns: tuple[int, RatingArrays] | None = None  # (ratings_version, columns)
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs={
                "autocommit": True,
                "connect_timeout": max(2, round(timeout)),
                "application_name": "labsupport",
            },
            check=ConnectionPool.check_connection,
            timeout=timeout,
            # connect on demand: the first call after the server is back connects at
            # once (by default the pool retries in the background, ever less often)
            reconnect_timeout=0,
            open=False,
            name="labsupport",
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except PoolTimeout as exc:
            self._pool.close()
            msg = (
                f"could not connect to PostgreSQL at {self._where} "
                f"({_why_no_connection(url, timeout)}): start the server, or check the --db URL"
            )
            raise StoreUnavailableError(msg) from exc
        try:
            self._migrate()
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r})"

    # -- connections ---------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit: one statement, one transaction); an outage, a 503."""
        try:
            with self._pool.connection() as con:
                try:
                    yield con
                except psycopg.Error as exc:
                    if con.broken or _is_outage(exc):
                        raise self._unavailable(exc) from exc
                    raise
        except PoolTimeout as exc:
            raise self._unavailable(exc) from exc
        except psycopg.OperationalError as exc:  # raised while checking out a connection
            if not _is_outage(exc):
                raise
            raise self._unavailable(exc) from exc

    @contextmanager
    def _transaction(self, *, snapshot: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """Several statements in one transaction; `snapshot`: all read one state, read only."""
        with self._connection() as con, con.transaction():
            if snapshot:
                con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield con

    def _unavailable(self, exc: Exception) -> StoreUnavailableError:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreUnavailableError(
            f"the PostgreSQL server at {self._where} is out of reach ({reason}); "
            "try again once it is back"
        )

    def _migrate(self) -> None:
        with self._transaction() as con:
            # Concurrent starts queue here; the lock ends with the transaction.
            con.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            con.execute("CREATE TABLE IF NOT EXISTS labsupport_schema (version INTEGER NOT NULL)")
            row = con.execute("SELECT max(version) FROM labsupport_schema").fetchone()
            applied = 0 if row is None or row[0] is None else int(row[0])
            if applied > len(_MIGRATIONS):
                msg = (
                    f"the database at {self._where} has schema version {applied}, newer than "
                    f"this labsupport knows ({len(_MIGRATIONS)}): upgrade labsupport"
                )
                raise RuntimeError(msg)
            for version, script in enumerate(_MIGRATIONS[applied:], start=applied + 1):
                con.execute(script)  # several statements: sent as one simple query
                con.execute("INSERT INTO labsupport_schema VALUES (%s)", (version,))

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        with self._connection() as con:
            row = con.execute(sql, params).fetchone()
        assert row is not None
        return row[0]

    # -- movies ----------------------------------------------------------------

    def add_movie(self, title: str, year: int, genre: str) -> Movie:
        return self.add_movies([(title, year, genre)])[0]

    def add_movies(self, movies: Iterable[tuple[str, int, str]]) -> list[Movie]:
        items = list(movies)
        with self._transaction() as con:
            # ids are MAX + 1, ...: one writer at a time (readers are not blocked)
            con.execute("LOCK TABLE movies IN SHARE ROW EXCLUSIVE MODE")
            row = con.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM movies").fetchone()
            assert row is not None
            new = [Movie(row[0] + i, t, y, g) for i, (t, y, g) in enumerate(items)]
            with con.cursor() as cur:
                cur.executemany(
                    "INSERT INTO movies (id, title, year, genre) VALUES (%s, %s, %s, %s)",
                    [(m.id, m.title, m.year, m.genre) for m in new],
                )
        return new

    def get_movie(self, movie_id: int) -> Movie | None:
        with self._connection() as con:
            row = con.execute(
                "SELECT id, title, year, genre FROM movies WHERE id = %s", (movie_id,)
            ).fetchone()
        return None if row is None else Movie(*row)

    def list_movies(self, limit: int | None = None, offset: int = 0) -> list[Movie]:
        _check_page(limit, offset)
        sql = "SELECT id, title, year, genre FROM movies ORDER BY id LIMIT %s OFFSET %s"
        with self._connection() as con:
            rows = con.execute(sql, (limit, offset)).fetchall()  # LIMIT NULL: no limit
        return [Movie(*r) for r in rows]

    def count_movies(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM movies"))

    # -- ratings ---------------------------------------------------------------

    def add_rating(self, user_id: int, movie_id: int, score: float) -> dict[str, int | float]:
        user, movie, value = _checked_rating(user_id, movie_id, score)
        with self._transaction() as con:
            if con.execute("SELECT 1 FROM movies WHERE id = %s", (movie,)).fetchone() is None:
                raise _unknown_movie(movie)
            seq = self._bump(con, 1)
            con.execute(
                "INSERT INTO ratings (user_id, movie_id, score, seq) "
                f"VALUES (%s, %s, %s, %s) {_UPSERT}",
                (user, movie, value, seq),
            )
            con.execute(_LOG_WRITE, (seq, time.time()))
        return _row(user, movie, value)

    def add_ratings(self, ratings: RatingArrays) -> int:
        users, movies, scores = _checked_columns(ratings)
        n = len(users)
        if n == 0:
            return 0
        keep = _last_of_each_pair(users, movies)
        stream = _copy_in(users[keep], movies[keep], scores[keep].astype(np.float64))
        with self._transaction() as con:
            con.execute(
                "CREATE TEMPORARY TABLE incoming (user_id BIGINT, movie_id BIGINT, "
                "score DOUBLE PRECISION) ON COMMIT DROP"
            )
            with con.cursor() as cur, cur.copy("COPY incoming FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(stream)
            seq = self._bump(con, n)  # repeats count, as in the other stores
            con.execute(
                "INSERT INTO ratings (user_id, movie_id, score, seq) "
                f"SELECT user_id, movie_id, score, %s FROM incoming {_UPSERT}",
                (seq,),
            )
            con.execute(_LOG_WRITE, (seq, time.time()))
        return n

    @staticmethod
    def _bump(con: psycopg.Connection[Any], n: int) -> int:
        """Add `n` to the counter; the row lock it takes orders the writers' commits."""
        row = con.execute(_BUMP_VERSION, (n,)).fetchone()
        assert row is not None
        return int(row[0])

    def list_ratings(self) -> list[dict[str, int | float]]:
        with self._connection() as con:
            rows = con.execute(_ALL_RATINGS).fetchall()
        return [_row(u, m, s) for u, m, s in rows]

    def rating_arrays(self) -> RatingArrays:
        """Return the ratings as columns, reading only what changed since last time.

        The columns are cached with the `ratings_version` they were read at;
        after writes (from this process or any other), only the rows with a
        greater `seq` are read and merged in. A full read happens the first
        time, or when more than 5 % of the table changed. The counter and the
        rows are read in one snapshot, so they agree. The cached arrays are
        read-only, since every caller shares them.
        """
        with self._connection() as con:
            row = con.execute(
                "SELECT value FROM counters WHERE name = 'ratings_version'"
            ).fetchone()
            assert row is not None
            version = int(row[0])
            with self._lock:
                cached = self._columns
            if cached is not None and cached[0] == version:
                return cached[1]
            if cached is not None and version - cached[0] <= _MERGE_MAX_SHARE * len(cached[1]):
                changed = _fetch_columns(con, "seq > %s", (cached[0],))
                columns = _merge_sorted(cached[1], changed)
            else:
                columns = _fetch_columns(con)
        for array in (columns.user_ids, columns.movie_ids, columns.scores):
            array.flags.writeable = False
        with self._lock:
            if self._columns is None or self._columns[0] < version:
                self._columns = (version, columns)
        return columns

    def user_ratings(self, user_id: int) -> RatingArrays:
        with self._transaction(snapshot=True) as con:  # its chunks, if many, read one state
            return _fetch_columns(con, "user_id = %s", (operator.index(user_id),))

    def count_ratings(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM ratings"))

    def count_users(self) -> int:
        return int(self._one("SELECT COUNT(DISTINCT user_id) FROM ratings"))

    def ratings_version(self) -> int:
        return int(self._one(_VERSION))

    def oldest_unseen_write(self, version: int) -> float | None:
        with self._connection() as con:
            row = con.execute(
                "SELECT written_at FROM writes WHERE version > %s ORDER BY version LIMIT 1",
                (operator.index(version),),
            ).fetchone()
        return None if row is None else float(row[0])

    # -- tasks -------------------------------------------------------------------

    def save_task(self, task: Mapping[str, Any]) -> None:
        task_id, data = _task_json(task)
        with self._transaction() as con:
            con.execute(
                "INSERT INTO tasks (task_id, data) VALUES (%s, %s) "
                "ON CONFLICT (task_id) DO UPDATE SET data = EXCLUDED.data",
                (task_id, data),
            )

    def load_tasks(self) -> list[dict[str, Any]]:
        with self._connection() as con:
            rows = con.execute("SELECT data FROM tasks ORDER BY seq").fetchall()
        return [json.loads(data) for (data,) in rows]

    def close(self) -> None:
        self._pool.close()


def _fetch_columns(
    con: psycopg.Connection[Any], where: str = "TRUE", params: tuple[Any, ...] = ()
) -> RatingArrays:
    """The ratings matching `where`, as columns sorted by (user, movie).

    The server packs each chunk of rows into one `bytea` of 24-byte records
    (`int8send`, `float8send`: big-endian), which numpy reads as it is: no
    Python object per row, and no per-row protocol message as with `COPY`.
    Chunks follow the primary key (keyset paging), so a table of any size is
    read in bounded pieces; the order inside a chunk is not guaranteed, so
    each chunk is sorted here.
    """
    parts: list[npt.NDArray[np.void]] = []
    after: tuple[int, int] | None = None  # the last (user, movie) read so far
    with con.cursor(binary=True) as cur:
        while True:
            keyset = "TRUE" if after is None else "(user_id, movie_id) > (%s, %s)"
            query = _CHUNK.format(where=where, after=keyset)
            row = cur.execute(query, (*params, *(after or ()), _CHUNK_ROWS)).fetchone()
            packed = b"" if row is None or row[0] is None else row[0]
            table = np.frombuffer(packed, dtype=_PACKED_ROW)
            table = table[np.lexsort((table["movie_id"], table["user_id"]))]
            parts.append(table)
            if len(table) < _CHUNK_ROWS:
                break
            after = (int(table["user_id"][-1]), int(table["movie_id"][-1]))
    table = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return RatingArrays.from_columns(table["user_id"], table["movie_id"], table["score"])


def _why_no_connection(url: str, timeout: float) -> str:
    """What libpq says when it connects to `url` once: refused, no such database, bad password.

    The pool only reports that it timed out; this gives the student the reason.
    libpq's messages name the host and port, never the password.
    """
    try:
        psycopg.connect(url, connect_timeout=max(2, round(timeout))).close()
    except psycopg.Error as exc:
        # 'connection failed: connection to server at "h", port p failed: FATAL:  <reason>'
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = first.rsplit("failed: ", 1)[-1].removeprefix("FATAL:")
        return " ".join(reason.split())
    return f"no connection within {timeout:g} s"


def _is_outage(exc: BaseException) -> bool:
    """Whether a psycopg error means the server is out of reach (not a bad query)."""
    state: str | None = getattr(exc, "sqlstate", None)
    if state is None:  # no answer from a server at all: refused, reset, timed out
        return isinstance(exc, psycopg.OperationalError)
    return state.startswith(_OUTAGE_STATES)
