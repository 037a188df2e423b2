#!/usr/bin/env python
"""Give every chapter notebook an "Open in Colab" badge and a Colab setup cell, idempotently.

Usage: python tools/colab_cells.py [--check] [--ref REF] [--nbs nbs] [NOTEBOOK ...]

Chapters are the notebooks in nbs/ except index.ipynb and names starting with `_` or `.`.
Each one gets, as its first two cells:
  1. a markdown cell with the badge, linking to the notebook on GitHub through Colab;
  2. a code cell that, in Colab only, pip-installs the package from the repository at the
     branch the badge opens (default settings.ini's `branch`, else `main`: the notebook and the
     package then come from the same commit), with fastcore for the chapters' test cells,
     and checks for a GPU, warning
     clearly on a CPU runtime; outside Colab (nbdev_test, Jupyter, the site) it does nothing;
and the notebook metadata asks Colab for a GPU (`accelerator: GPU`, `colab.gpuType: T4`).
Old copies of both cells are replaced, so running it again changes nothing.
`--check` writes nothing and exits 1 when a notebook lacks the cells or has stale ones.
The website build drops both cells (its pages have their own Colab launch button).
"""
from __future__ import annotations

import argparse
import configparser
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BADGE_IMG = "https://colab.research.google.com/assets/colab-badge.svg"
SETUP_MARKER = "# Colab setup:"  # first line of the setup cell; the site build looks for it
BADGE_ID, SETUP_ID = "colab-badge", "colab-setup"


def settings(root: Path = ROOT) -> dict:
    cp = configparser.ConfigParser(delimiters=["="], interpolation=None)
    cp.read(root / "settings.ini", encoding="utf-8")
    return dict(cp["DEFAULT"])


def github_repo(cfg: dict) -> str:
    "`user/repo` from settings.ini's git_url."
    return cfg["git_url"].rstrip("/").removesuffix(".git").split("github.com/")[-1]


def badge_source(nb_path: str, cfg: dict) -> str:
    url = f"https://colab.research.google.com/github/{github_repo(cfg)}/blob/{cfg.get('branch', 'main')}/{nb_path}"
    return f"[![Open In Colab]({BADGE_IMG})]({url})"


def default_ref(cfg: dict) -> str:
    "The branch the badges open: installing from it gives Colab the package of the notebook's own commit."
    return cfg.get("branch", "main")


def setup_source(cfg: dict, ref: str) -> str:
    pkg = f"git+{cfg['git_url'].rstrip('/')}@{ref}"
    return f'''{SETUP_MARKER} install the course package and check for a GPU. Does nothing outside Colab.
import sys
if "google.colab" in sys.modules:
    import subprocess
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "{pkg}", "fastcore"], check=True)
    # The checkpoints that later chapters reuse (phase1_model.pt, ...) vanish with the runtime. To keep them, run every
    # chapter from one Google Drive folder: uncomment the next line.
    # from google.colab import drive; import os; drive.mount("/content/drive"); os.makedirs(d := "/content/drive/MyDrive/fnti", exist_ok=True); os.chdir(d)
    import torch
    if torch.cuda.is_available():
        print(f"Colab GPU: {{torch.cuda.get_device_name(0)}}")
    else:
        print("WARNING: this Colab runtime has no GPU, so the chapter falls back to its small CPU preset.\\n"
              "For the full recipe: Runtime > Change runtime type > T4 GPU, then run all cells again.")'''


def chapters(nbs: Path) -> list[Path]:
    return sorted(p for p in nbs.glob("*.ipynb") if p.stem != "index" and not p.name.startswith(("_", ".")))


def _src(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def is_badge(cell) -> bool: return cell.get("cell_type") == "markdown" and BADGE_IMG in _src(cell)
def is_setup(cell) -> bool: return cell.get("cell_type") == "code" and _src(cell).startswith(SETUP_MARKER)


def desired(nb: dict, rel_path: str, cfg: dict, ref: str) -> dict:
    "The notebook with fresh badge and setup cells first, old copies removed, GPU metadata set."
    nb = json.loads(json.dumps(nb))
    cells = [c for c in nb["cells"] if not (is_badge(c) or is_setup(c))]
    with_ids = (nb.get("nbformat", 4), nb.get("nbformat_minor", 0)) >= (4, 5)
    badge = {"cell_type": "markdown", "metadata": {}, "source": _lines(badge_source(rel_path, cfg))}
    setup = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
             "source": _lines(setup_source(cfg, ref))}
    if with_ids: badge["id"], setup["id"] = BADGE_ID, SETUP_ID
    nb["cells"] = [badge, setup] + cells
    md = nb.setdefault("metadata", {})
    md["accelerator"] = "GPU"
    colab = md.setdefault("colab", {})
    colab["gpuType"] = "T4"
    colab.setdefault("provenance", [])
    return nb


def is_current(nb: dict, want: dict) -> bool:
    "Cells and Colab metadata as `desired` makes them (ids and cell metadata are not compared)."
    key = lambda n: ([(c["cell_type"], _src(c)) for c in n["cells"]],
                     n.get("metadata", {}).get("accelerator"), n.get("metadata", {}).get("colab", {}).get("gpuType"))
    return key(nb) == key(want)


def dumps(nb: dict) -> str:
    "nbdev's and nbformat's layout: sorted keys, one-space indent, a final newline."
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="*", type=Path, help="default: every chapter in --nbs")
    p.add_argument("--nbs", type=Path, default=ROOT / "nbs")
    p.add_argument("--ref", default=None, help="git branch, tag or commit to install in Colab (default: the branch the badge opens)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a notebook needs updating")
    a = p.parse_args(argv)
    cfg = settings()
    ref = a.ref or default_ref(cfg)
    nbs_rel = cfg.get("nbs_path", "nbs")
    stale = []
    for path in a.notebooks or chapters(a.nbs):
        text = path.read_text(encoding="utf-8")
        nb = json.loads(text)
        want = desired(nb, f"{nbs_rel}/{path.name}", cfg, ref)
        if is_current(nb, want): continue
        stale.append(path)
        if not a.check:
            path.write_text(dumps(want), encoding="utf-8")
            print(f"{path}: Colab cells written")
    if a.check and stale:
        print("Colab cells missing or stale (run: python tools/colab_cells.py):\n  " + "\n  ".join(map(str, stale)))
        return 1
    if a.check: print("Colab cells up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
