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


# ---------------------------------------------------------------------------------------------
# Tampering with a data directory while keeping its checksums valid

def read_shard_arrays(path) -> tuple[dict, dict]:
    """(arrays by name, safetensors metadata) of a shard, as writable numpy copies."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k).copy() for k in f.keys()}, f.metadata() or {}


def write_shard_arrays(path, arrays: dict, metadata: dict) -> None:
    from safetensors.numpy import save_file

    save_file(arrays, str(path), metadata=metadata)


def fix_checksums(data_dir) -> None:
    """Rewrite every shard's sha256 in the manifest to match the file: tampering the integrity check can't see."""
    import hashlib
    import json
    from pathlib import Path

    path = Path(data_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            target = Path(data_dir) / shard["file"]
            if target.is_file():
                shard["sha256"] = hashlib.sha256(target.read_bytes()).hexdigest()
    path.write_text(json.dumps(manifest, indent=2))


def snapshot(*dirs) -> dict:
    """Every file under `dirs` with its bytes' sha256, to prove a command left them alone."""
    import hashlib
    from pathlib import Path

    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in dirs for p in sorted(Path(d).rglob("*")) if p.is_file()}


def one_error_line(err: str) -> str:
    """The single `error:` line of a failed command's stderr; fails on a traceback or several errors."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]
