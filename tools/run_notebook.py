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

import re

import nbformat
from nbclient import NotebookClient

BAR = re.compile(r"\d+%\|.*\|")   # a tqdm progress line: " 42%|####      | 80/187 ..."


def tidy_outputs(nb) -> None:
    "Keep a progress bar's final state only, and drop tqdm's 'IProgress not found' warning, in stored outputs."
    for cell in nb.cells:
        if cell.get("cell_type") != "code": continue
        merged = []   # a redrawn bar arrives as many stream messages: join neighbours of the same stream first
        for out in cell.get("outputs", []):
            if (out.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                    and merged[-1]["name"] == out["name"]):
                merged[-1]["text"] += out["text"]
            else: merged.append(out)
        cell["outputs"] = merged
        for out in cell.get("outputs", []):
            if out.get("output_type") != "stream" or out.get("name") != "stderr": continue
            kept = []
            for line in re.split(r"[\r\n]", out["text"]):
                if "IProgress not found" in line or "from .autonotebook import tqdm" in line: continue
                if BAR.search(line) and kept and BAR.search(kept[-1]) and line.split(":")[0] == kept[-1].split(":")[0]:
                    kept[-1] = line   # a newer state of the same bar
                elif line.strip(): kept.append(line)
            out["text"] = "\n".join(kept) + ("\n" if kept else "")
        cell["outputs"] = [o for o in cell.get("outputs", []) if o.get("output_type") != "stream" or o["text"].strip()]


def run(path: Path, preset: str | None, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    if preset: os.environ["FNTI_PRESET"] = preset
    os.environ.pop("IN_TEST", None)
    os.environ.setdefault("TQDM_MININTERVAL", "30")   # few progress-bar redraws in the stored outputs
    t0 = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent.resolve())}}).execute()
    tidy_outputs(nb)
    nbformat.write(nb, path)
    return time.time() - t0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="+", type=Path)
    p.add_argument("--preset", choices=["test", "cpu", "gpu"], default=None)
    p.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    p.add_argument("--tidy-only", action="store_true", help="only tidy the stored outputs (progress bars, warnings)")
    a = p.parse_args()
    for nb in a.notebooks:
        if a.tidy_only:
            book = nbformat.read(nb, as_version=4); tidy_outputs(book); nbformat.write(book, nb); continue
        print(f"{nb}: ran in {run(nb, a.preset, a.timeout):.0f} s", flush=True)
    sys.exit(0)
