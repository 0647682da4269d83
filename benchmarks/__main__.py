"""Run the benchmarks: ``python -m benchmarks [--only NAME ...] [--quick] [--out PATH]``.

Prints a table per section and writes everything, with the machine's facts,
to ``benchmarks/results/latest.json``. With ``--only`` the other sections
already in that file are kept, so one section can be refreshed on its own.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import SECTIONS
from benchmarks._common import RESULTS_PATH, Column, format_table, loadavg, machine_facts
from benchmarks._wrk import INSTALL_HINT, find_wrk

SCHEMA_VERSION = 1


def _runner(name: str) -> tuple[Callable[[dict[str, Any] | None], dict[str, Any]], list[Column]]:
    """Return a section's ``run`` and ``COLUMNS`` (each section is the module of its name)."""
    module = importlib.import_module(f"benchmarks.{name}")
    return module.run, module.COLUMNS


def print_section(name: str, section: dict[str, Any]) -> None:
    """Print one section's tables, targets and notes."""
    _, columns = _runner(name)
    print(f"\n== {name}: {section.get('title', '')}")
    if section.get("skipped"):
        print(f"SKIPPED: {section['skipped']}")
        return
    if section.get("rows"):
        print(format_table(section["rows"], columns))
    if name == "rebuild" and section.get("store") and "error" not in section["store"]:
        from benchmarks.rebuild import STORE_COLUMNS

        print("\nFrom SQLite to a model:")
        print(format_table([section["store"]], STORE_COLUMNS))
    if name == "serving" and section.get("recommend_us"):
        costs = ", ".join(f"{k}: {v} us" for k, v in section["recommend_us"].items())
        print(f"recommend() in-process, per call: {costs}")
    if name == "quality":
        from benchmarks.quality import print_extra

        print_extra(section)  # the cold-start and fold-in drift tables
    if name == "workbook":
        print(f"total {section.get('total_seconds')} s over the notebooks")
        for line in section.get("slow_cells", []):
            print(f"  slow: {line}")
    for target in section.get("targets", []):
        met = target.get("met")
        mark = "met   " if met else ("MISSED" if met is not None else "info  ")
        print(f"  [{mark}] {target['name']}: {target['measured']} (target {target['target']})")
    for note in section.get("notes", []):
        print(f"  note: {note}")
    print(f"  ({section.get('seconds', 0):.0f} s)")


def _load(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if data.get("schema") == SCHEMA_VERSION else {}


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections; return 0 (missed targets are reported, not errors)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        metavar="NAME",
        help=f"run only this section (repeatable): {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="skip the ML-25M build in the rebuild section (about 20 s)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_PATH, help="JSON results file")
    parser.add_argument(
        "--print",
        dest="show",
        action="store_true",
        help="print the tables of the results file and exit",
    )
    args = parser.parse_args(argv)

    if args.show:
        data = _load(args.out)
        for name in SECTIONS:
            if name in data.get("sections", {}):
                print_section(name, data["sections"][name])
        return 0

    chosen = args.only or list(SECTIONS)
    if find_wrk() is None and {"responsiveness", "serving"} & set(chosen):
        print(f"WARNING: {INSTALL_HINT}", file=sys.stderr)
    data = _load(args.out) if args.only else {}
    data.update(
        schema=SCHEMA_VERSION,
        command="python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
        machine=machine_facts(),
    )
    data.setdefault("sections", {})
    started = time.perf_counter()
    for name in chosen:
        run, _ = _runner(name)
        settings: dict[str, Any] = {}
        if name == "rebuild" and args.quick:
            settings["shapes"] = ["ml-100k", "ml-1m", "ml-10m"]
        print(f"\n-- running {name} ...", flush=True)
        t0 = time.perf_counter()
        section = run(settings)
        section["seconds"] = round(time.perf_counter() - t0, 1)
        section["measured_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        section["loadavg_after"] = loadavg()
        data["sections"][name] = section
        _write(args.out, data)  # after every section: a crash keeps what was measured
        print_section(name, section)
    data["last_run_seconds"] = round(time.perf_counter() - started, 1)
    data["seconds"] = round(sum(s.get("seconds", 0.0) for s in data["sections"].values()), 1)
    data["machine"]["loadavg_end"] = loadavg()
    _write(args.out, data)
    print(
        f"\nwrote {args.out}: this run {data['last_run_seconds']:.0f} s, "
        f"all recorded sections {data['seconds']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
