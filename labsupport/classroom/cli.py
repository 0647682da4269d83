"""The workbook's commands for `python -m labsupport`: notebooks and the student edition.

Registered as the `labsupport.cli` entry point `classroom` (see
`labsupport.__main__`), so the service's command line never imports the
classroom package:

    python -m labsupport notebooks run notebooks/              # re-execute in place
    python -m labsupport notebooks run-all notebooks/X.ipynb   # replay JupyterLab's Run All
    python -m labsupport student-edition OUT/                  # solutions replaced by stubs
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

from labsupport.store import Store
from labsupport.tasks import RebuildServiceProtocol

__all__ = ["plugin"]


def _notebooks(paths: list[Path]) -> list[Path]:
    from labsupport.classroom.workbook import notebook_paths

    return [nb for path in paths for nb in (notebook_paths(path) if path.is_dir() else [path])]


def _lab_app(args: argparse.Namespace) -> contextlib.AbstractContextManager[object]:
    """The finished app for the lab cells, unless `--own-app` keeps the notebook's own."""
    from labsupport.classroom.workbook import solution_lab_app

    return contextlib.nullcontext() if args.own_app else solution_lab_app()


def _run(args: argparse.Namespace) -> int:
    from labsupport.classroom.workbook import execute_notebook

    with _lab_app(args):
        for path in _notebooks(args.paths):
            started = time.perf_counter()
            execute_notebook(path)
            print(f"{path}: {time.perf_counter() - started:.1f} s", flush=True)
    return 0


def _run_all(args: argparse.Namespace) -> int:
    from labsupport.classroom.workbook import replay_run_all

    failed = 0
    with _lab_app(args):
        for path in _notebooks(args.paths):
            replies = replay_run_all(path)
            bad = [r for r in replies if r.status != "ok" and "raises-exception" not in r.tags]
            failed += len(bad)
            print(f"{path}: {len(replies) - len(bad)}/{len(replies)} cells ok", flush=True)
            aborted = [r for r in bad if r.status == "aborted"]
            for reply in (r for r in bad if r.status != "aborted"):
                print(f"  cell {reply.index}: {reply.status} {reply.error or ''}")
            if aborted:
                print(f"  {len(aborted)} cells after it not run (Run All stops at an error)")
    return 1 if failed else 0


def _student_edition(args: argparse.Namespace) -> int:
    from labsupport.classroom.workbook import student_edition

    for path in student_edition(args.source, args.out):
        print(path)
    return 0


class _ClassroomPlugin:
    """The hooks `labsupport.__main__` calls on every `labsupport.cli` plugin."""

    def add_serve_options(self, serve: argparse.ArgumentParser) -> None:
        """`serve` has no classroom options."""

    def add_commands(self, commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        """Add `notebooks run|run-all` and `student-edition`."""
        notebooks = commands.add_parser("notebooks", help="re-execute or replay the notebooks")
        actions = notebooks.add_subparsers(dest="action", required=True)
        run = actions.add_parser("run", help="re-execute notebooks in place, saving outputs")
        replay = actions.add_parser("run-all", help="replay JupyterLab's Run All and report")
        for action, func in ((run, _run), (replay, _run_all)):
            action.add_argument("paths", nargs="+", type=Path, help="notebooks or folders")
            action.add_argument(
                "--own-app",
                action="store_true",
                help="check the notebooks' own lab app (app/ beside them, or LABSUPPORT_LAB_APP) "
                "instead of a fresh copy of the finished one",
            )
            action.set_defaults(func=func)

        student = commands.add_parser(
            "student-edition", help="write the notebooks with solution cells replaced by stubs"
        )
        student.add_argument("out", help="folder to write the student copies into")
        student.add_argument(
            "--source", default="notebooks", help="the workbook (default notebooks)"
        )
        student.set_defaults(func=_student_edition)

    def check_serve(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        """Nothing to check."""

    def rebuild_service(
        self, args: argparse.Namespace, store: Store
    ) -> tuple[RebuildServiceProtocol, bool] | None:
        """The classroom never provides the service."""
        return None


plugin = _ClassroomPlugin()
"""The `labsupport.cli` entry point `classroom` (see `labsupport.__main__`)."""
