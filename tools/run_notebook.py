#!/usr/bin/env python
"""Execute notebooks in place so their stored outputs match the code (the site shows them).

Usage: python tools/run_notebook.py [--preset test|cpu|gpu] [--timeout S] NB.ipynb [...]
Runs each notebook top to bottom from its own folder with FNTI_PRESET set, and writes
the outputs back. Cell ids and metadata are kept; execution counts are renumbered.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def run(path: Path, preset: str | None, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    if preset: os.environ["FNTI_PRESET"] = preset
    os.environ.pop("IN_TEST", None)
    t0 = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent.resolve())}}).execute()
    nbformat.write(nb, path)
    return time.time() - t0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="+", type=Path)
    p.add_argument("--preset", choices=["test", "cpu", "gpu"], default=None)
    p.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    a = p.parse_args()
    for nb in a.notebooks:
        print(f"{nb}: ran in {run(nb, a.preset, a.timeout):.0f} s", flush=True)
    sys.exit(0)
