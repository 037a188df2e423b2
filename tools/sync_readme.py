#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which cannot be installed offline).

Usage: python tools/sync_readme.py [--check]
Markdown cells are copied as they are, except that links to other notebooks (relative to nbs/ on the site)
are made relative to the repository root; code cells are shown as Python blocks unless they start with an
nbdev `#| hide` directive. --check exits 1 when README.md is stale.
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NB_LINK = re.compile(r"\]\((?![a-z]+:|/|#)([^)\s]+\.ipynb(?:#[^)\s]*)?)\)")   # ](notation.ipynb) and the like
HEADER = "<!-- Generated from nbs/index.ipynb by tools/sync_readme.py: edit the notebook, not this file. -->\n\n"


def render(nb_path: Path = ROOT / "nbs" / "index.ipynb") -> str:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    parts = []
    for cell in nb["cells"]:
        src = "".join(cell["source"]).strip()
        if not src: continue
        if cell["cell_type"] == "markdown": parts.append(NB_LINK.sub(r"](nbs/\1)", src))
        elif cell["cell_type"] == "code" and not src.startswith("#| hide"):
            parts.append(f"```python\n{src}\n```")
    return HEADER + "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    readme, text = ROOT / "README.md", render()
    if "--check" in sys.argv:
        if not readme.exists() or readme.read_text(encoding="utf-8") != text:
            sys.exit("README.md is stale: run `python tools/sync_readme.py` and commit it")
        sys.exit(0)
    readme.write_text(text, encoding="utf-8")
    print(f"wrote {readme}")
