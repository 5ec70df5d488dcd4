"""The code's shape, checked: the import contracts in setup.cfg (`[importlinter:...]`, run by
import-linter's lint-imports) and the 400-line limit on every module of computed/, api/ and images/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("computed", "api", "images")
MAX_LINES = 400


def test_import_contracts_are_kept():
    # lint-imports reads the packages from the working directory (the repository, not the
    # editable install's copy); --no-cache leaves no .import_linter_cache behind.
    run = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
         "--no-cache", "--no-logo", str(ROOT / "setup.cfg")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, f"lint-imports failed (exit {run.returncode}):\n{run.stdout}{run.stderr}"


def test_no_module_is_over_400_lines():
    lines = {
        path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert lines, "found no modules"
    over = {path: n for path, n in lines.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: " + ", ".join(f"{p} ({n})" for p, n in over.items())
