"""Running `c2p` on 2 gloo ranks through torchrun, with a wrapper script that logs per rank."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_logged_ranks(tmp_path: Path, script_text: str, args: list, env: dict) -> tuple[subprocess.CompletedProcess, Path]:
    """`script_text` (which pops its log folder from argv[1], then runs `c2p ARGS`) on 2 gloo ranks.

    Returns the finished torchrun process and the emptied-then-filled log folder."""
    script, logs = tmp_path / "c2p_logged.py", tmp_path / "logs"
    script.write_text(script_text)
    logs.mkdir(exist_ok=True)
    for old in logs.iterdir():
        old.unlink()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(logs), *map(str, args)], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    return proc, logs
