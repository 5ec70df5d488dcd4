"""``scripts/bench/load`` at a small scale: concurrent clients (describe, launch with
client tokens and retries that race, terminate, EC2 DescribeInstances) against the
service on libvirt's test driver, no request failing, and its audit of the store passing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_load_benchmark_runs_clean_and_its_audit_passes():
    done = subprocess.run([sys.executable, ROOT / "scripts/bench/load.py", "--clients", "4", "--seconds", "3"],
                          check=False, capture_output=True, text=True, timeout=300, cwd=ROOT)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert re.search(r"^audit: OK: \d+ launches acknowledged", out, re.MULTILINE), out
    assert "errors: 0\n" in out
    for label in ("GET /v1/instances ", "GET /v1/instances/{id}", "POST /v1/instances", "DELETE /v1/instances/{id}"):
        assert label in out, out
    requests = int(re.search(r"^all +(\d+)", out, re.MULTILINE).group(1))
    assert requests > 20, out
