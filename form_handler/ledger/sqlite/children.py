"""Our own Python as a child process (verify's workers, the writer process): this very code, not another copy.

`python -c CODE ARGS...` rather than multiprocessing, whose spawn would import (run) the caller's main script
again in each child. The package this module is in goes first on the child's path, so a checkout that is not
installed, or installed elsewhere, runs the same code as its parent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[3])


def start_python(code: str, *args: str, **popen: Any) -> subprocess.Popen[bytes]:
    """Popen of `python -c code args...` with this package first on its path; OSError when it cannot start."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (_PACKAGE_PARENT, os.environ.get("PYTHONPATH"))))}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, **popen)
