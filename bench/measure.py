"""What every benchmark here measures the same way: memory, CPU time, and which code was timed."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    """This process's resident memory now, MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def hwm_mb() -> float:
    """This process's peak resident memory (since the last :func:`reset_hwm`), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    """User + system CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark, so the next peak is the timed part's own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def code_state(files: Sequence[Path]) -> dict[str, Any]:
    """Which code was measured: the commit, which of ``files`` changed since, and their digest."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = git("status", "--porcelain", "--", *(str(f.relative_to(REPO)) for f in files))
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files if f.exists())).hexdigest()[:12]
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted": changed.splitlines(),
        "sha256": digest,
    }
