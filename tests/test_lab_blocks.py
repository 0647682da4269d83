"""The code the lab steps show, typed into the starter app as the steps say, passes their checks.

A lab step's Markdown cell shows the block a student adds to a file of their
app; this test adds each block to a fresh starter where the step says, then
runs the step's check cell. A block that drifts from what the check wants
(a renamed function, a missing import) fails here before a class finds it.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from labsupport.classroom.checks import lab1, lab2
from labsupport.labapp import write_lab_app

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
FUTURE = "from __future__ import annotations\n"


def shown_block(notebook: str, cell_id: str) -> str:
    """The first ```python block of a notebook's Markdown cell."""
    nb = nbformat.read(NOTEBOOKS / notebook, as_version=4)
    (cell,) = [c for c in nb.cells if c.get("id") == cell_id]
    return re.findall(r"```python\n(.*?)```", cell.source, re.S)[0]


def add_after_imports(path: Path, imports: str, rest: str) -> None:
    """Put `imports` right after the `__future__` import and `rest` at the end of the file."""
    text = path.read_text(encoding="utf-8")
    assert FUTURE in text
    path.write_text(text.replace(FUTURE, FUTURE + imports, 1) + "\n\n" + rest, encoding="utf-8")


def split_imports(block: str) -> tuple[str, str]:
    lines = block.splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if not line.startswith(("import ", "from ")))
    return "".join(lines[:n]), "".join(lines[n:])


@pytest.fixture
def typed_app(tmp_path: Path) -> Path:
    write_lab_app(tmp_path)
    # Lab 1 step 1 (02): build_model in app/recommender.py, and the model asked first.
    imports, rest = split_imports(shown_block("02_svd_recommender.ipynb", "lab1-step1"))
    recommender = tmp_path / "app" / "recommender.py"
    add_after_imports(recommender, imports, rest)
    first_line = "    rows = list(ratings)\n"
    text = recommender.read_text(encoding="utf-8")
    asked_first = "    if user_id in MODEL_CACHE:\n        return MODEL_CACHE[user_id][:k]\n"
    recommender.write_text(text.replace(first_line, asked_first + first_line, 1), encoding="utf-8")
    # Lab 1 step 2 (03): the two imports lines, then the endpoints, in app/main.py.
    block = shown_block("03_background_rebuild.ipynb", "lab1-step2")
    imports, rest = split_imports(block)
    main = tmp_path / "app" / "main.py"
    add_after_imports(main, re.sub(r"\s*#.*", "", imports) + "\n", rest)
    # Lab 1 step 3: the lesson's quick test, as shown.
    quick = shown_block("03_background_rebuild.ipynb", "lab1-step3")
    (tmp_path / "tests" / "test_recommender_task.py").write_text(quick, encoding="utf-8")
    return tmp_path


LAB1_REBUILD = re.compile(
    r'@app\.post\("/recommender/rebuild", status_code=202\)\n'
    r"async def rebuild_recommendations\(.*?(?=\n\n\n)",
    re.S,
)


@pytest.fixture
def typed_lab2_app(typed_app: Path) -> Path:
    retry_client = typed_app / "app" / "retry_client.py"
    main = typed_app / "app" / "main.py"
    # Lab 2 step 1 (04): app/retry_client.py is the block, whole.
    retry_client.write_text(shown_block("04_retries_and_backoff.ipynb", "lab2-step1"), "utf-8")
    # Lab 2 step 2: wait_for_rebuild under with_backoff.
    polling = shown_block("04_retries_and_backoff.ipynb", "lab2-step2")
    retry_client.write_text(retry_client.read_text("utf-8") + "\n\n" + polling, "utf-8")
    # Lab 2 step 3: the imports, TASK_BY_KEY, and the keyed endpoint in place of Lab 1's.
    imports, rest = split_imports(shown_block("04_retries_and_backoff.ipynb", "lab2-step3"))
    keyed = rest.strip()
    table, endpoint = keyed.split("\n\n\n", 1)
    text = main.read_text("utf-8")
    assert len(LAB1_REBUILD.findall(text)) == 1
    text = LAB1_REBUILD.sub(lambda _: table + "\n\n\n" + endpoint.rstrip(), text)
    main.write_text(text, "utf-8")
    add_after_imports(main, re.sub(r"\s*#.*", "", imports) + "\n", "")
    # Lab 2 step 4 (05): the lifespan above `app = FastAPI(...)`, and the app created with it.
    imports, rest = split_imports(shown_block("05_shutdown_and_persistence.ipynb", "lab2-step4"))
    text = main.read_text("utf-8")
    created = 'app = FastAPI(title="Movie API")\n'
    assert created in text
    with_lifespan = 'app = FastAPI(title="Movie API", lifespan=lifespan)\n'
    main.write_text(text.replace(created, rest.strip() + "\n\n\n" + with_lifespan, 1), "utf-8")
    add_after_imports(main, re.sub(r"\s*#.*", "", imports) + "\n", "")
    return typed_app


def test_the_blocks_lab_1_shows_pass_its_checks(
    typed_app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab1.check_recommender(typed_app)
    lab1.check_rebuild_endpoint(typed_app)
    lab1.check_quick_test(typed_app)
    lab1.check_demo_flow(app_dir=typed_app)
    verdicts = capsys.readouterr().out.splitlines()
    assert len(verdicts) == 4 and all(v.startswith("✔") for v in verdicts)


def test_the_quick_test_shown_is_the_lessons_verbatim() -> None:
    assert shown_block("03_background_rebuild.ipynb", "lab1-step3") == lab1.QUICK_TEST


def test_the_blocks_lab_2_shows_pass_its_checks(
    typed_lab2_app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab2.check_retry_client(typed_lab2_app)
    lab2.check_polling(typed_lab2_app)
    lab2.check_idempotency(typed_lab2_app)
    lab2.check_shutdown(typed_lab2_app)
    lab1.check_rebuild_endpoint(typed_lab2_app)  # Lab 1 still holds with Lab 2's changes
    lab1.check_quick_test(typed_lab2_app)
    verdicts = capsys.readouterr().out.splitlines()
    assert len(verdicts) == 6 and all(v.startswith("✔") for v in verdicts), verdicts
