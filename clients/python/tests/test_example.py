"""The example cache manager runs against the real server and reacts to invalidations."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import Server

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cache_manager.py"


def test_example_cache_manager_reloads_after_an_invalidation(server: Server, ns):
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), server.ws_url, "--pattern", f"{ns}:*", "--keys", f"{ns}:1,{ns}:2",
         "--interval", "0.1", "--seconds", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None

        def wait_for(text: str, timeout: float = 10) -> None:
            deadline = time.monotonic() + timeout
            while not any(text in line for line in lines):
                assert time.monotonic() < deadline, f"no {text!r} in output:\n{''.join(lines)}"
                line = proc.stdout.readline()
                assert line, f"example exited early:\n{''.join(lines)}"
                lines.append(line)

        wait_for("ready:")
        wait_for(f"read {ns}:1 = {ns}:1@v")
        wait_for(f"read {ns}:2 = {ns}:2@v")
        r = server.post("/invalidate/key", {"keys": [f"{ns}:1"], "triggered_by": "pytest"})
        assert r.status == 200
        wait_for(f"invalidate seq={r['seq']}")
        wait_for(f"read {ns}:1 = {ns}:1@v3")  # reloaded: the third load of the database
        proc.terminate()  # SIGTERM: the example closes cleanly
        out, _ = proc.communicate(timeout=10)
        lines.append(out)
        assert proc.returncode == 0, "".join(lines)
        assert "stopping:" in out and "3 loads" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
