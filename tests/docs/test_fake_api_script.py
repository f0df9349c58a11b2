"""The docs send a reader to `python tests/support/fake_api.py` to try the http, files,
secrets and incremental examples: it serves what those pages use, and stops on Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

SCRIPT = Path(__file__).parents[1] / "support" / "fake_api.py"


def test_the_fake_api_runs_as_a_script_with_the_docs_files() -> None:
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.match(r"serving on (http://127\.0\.0\.1:\d+) ", line)
        assert found, line
        url = found.group(1)
        export = httpx.get(f"{url}/files/export.json", timeout=10)
        assert export.status_code == 200
        assert [row["sku"] for row in export.json()] == ["A-1", "B-7"]
        assert httpx.get(f"{url}/status/401", timeout=10).status_code == 401
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()
