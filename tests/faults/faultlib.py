"""Fault injection: run bertcli in a child process that can be killed or sabotaged."""

from __future__ import annotations

import os
import subprocess
import sys




def bertcli_process(args, preamble: str = "", **kwargs) -> subprocess.Popen:
    """Start `bertcli ARGS` in a child Python that first runs `preamble` (to plant a fault)."""
    code = f"import sys\n{preamble}\nfrom bertcli.cli import main\nmain(sys.argv[1:])\n"
    env = dict(os.environ)  # same threads as the test process: float sums must match bit for bit
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)
