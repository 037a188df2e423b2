#!/usr/bin/env python
"""Make the learner's exercise notebooks from the solution notebooks, or check that they are current.

Usage: python tools/make_exercises.py [--check] [--nbs nbs] [--out exercises]

One source holds exercise and solution: `nbs/*x_exercises.ipynb` (run by nbdev_test, so every
solution is tested). This script writes `exercises/<same name>.ipynb` with
  - code between `### BEGIN SOLUTION <id>` and `### END SOLUTION` replaced by
    `raise NotImplementedError("Exercise <id>: not yet implemented ...")` at the same indent;
  - markdown between `<!-- BEGIN SOLUTION -->` and `<!-- END SOLUTION -->` replaced by
    "*Your answer:*" (or by the text after `|` in `<!-- BEGIN SOLUTION | text -->`, possibly empty);
  - links to other notebooks (`](notation.ipynb)`) re-pointed to `../nbs/`, outputs and execution counts cleared, the `- skip_exec: true` frontmatter line dropped,
    and the Colab badge pointing at the learner's copy.
`--check` writes nothing and exits 1 when a learner notebook is missing, stale or orphaned.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import colab_cells as cc  # noqa: E402

CODE_BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION(?:\s+(?P<id>\S+))?\s*$")
CODE_END = re.compile(r"^[ \t]*### END SOLUTION\s*$")
MD_BEGIN = re.compile(r"^\s*<!-- BEGIN SOLUTION(?:\s*\|(?P<text>.*?))? -->\s*$")
MD_END = re.compile(r"^\s*<!-- END SOLUTION -->\s*$")
SKIP_EXEC = re.compile(r"^- skip_exec: true\s*$")
NB_LINK = re.compile(r"\]\((?!https?:|/|\.\./)([\w.-]+\.ipynb(?:#[\w-]*)?)\)")   # ](notation.ipynb) -> ](../nbs/notation.ipynb)
DEFAULT_ANSWER = "*Your answer:*"


class MarkerError(ValueError): pass


def exercise_notebooks(nbs: Path) -> list[Path]:
    return sorted(nbs.glob("*x_exercises.ipynb"))


def strip_code(src: str, where: str) -> str:
    out, inside = [], None
    for i, line in enumerate(src.splitlines(), 1):
        if m := CODE_BEGIN.match(line):
            if inside is not None: raise MarkerError(f"{where}: line {i}: BEGIN SOLUTION inside a solution")
            ex = m["id"] or "?"
            inside = ex
            out.append(f'{m["indent"]}raise NotImplementedError("Exercise {ex}: not yet implemented — '
                       f'write your code here, then run the check cell")')
        elif CODE_END.match(line):
            if inside is None: raise MarkerError(f"{where}: line {i}: END SOLUTION without BEGIN")
            inside = None
        elif inside is None:
            out.append(line)
    if inside is not None: raise MarkerError(f"{where}: BEGIN SOLUTION {inside} is never closed")
    return "\n".join(out)


def strip_markdown(src: str, where: str) -> str:
    out, inside = [], False
    for i, line in enumerate(src.splitlines(), 1):
        if m := MD_BEGIN.match(line):
            if inside: raise MarkerError(f"{where}: line {i}: BEGIN SOLUTION inside a solution")
            inside = True
            text = DEFAULT_ANSWER if m["text"] is None else m["text"].strip()
            if text: out.append(text)
        elif MD_END.match(line):
            if not inside: raise MarkerError(f"{where}: line {i}: END SOLUTION without BEGIN")
            inside = False
        elif not inside and not SKIP_EXEC.match(line):
            out.append(line)
    if inside: raise MarkerError(f"{where}: a markdown solution is never closed")
    return "\n".join(out)


def learner_version(nb: dict, rel_out: str, cfg: dict, ref: str, nbs_rel: str = "../nbs") -> dict:
    "The learner's notebook: solutions replaced by stubs, no outputs, links to chapters re-pointed, Colab badge for its own path."
    nb = json.loads(json.dumps(nb))
    # only what the learner needs: running the solution notebook (kernel name, cell timings) must not make this stale
    nb["metadata"] = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}
    for k, cell in enumerate(nb["cells"]):
        cell["metadata"] = {}
        src = cc._src(cell)
        where = f"cell {k}"
        if cell["cell_type"] == "code":
            new = strip_code(src, where)
            cell["outputs"], cell["execution_count"] = [], None
        elif cell["cell_type"] == "markdown":
            new = NB_LINK.sub(lambda m: f"]({nbs_rel}/{m[1]})", strip_markdown(src, where))
        else:
            new = src
        cell["source"] = cc._lines(new)
    return cc.desired(nb, rel_out, cfg, ref)


def count_solutions(nb: dict) -> int:
    return sum(bool(CODE_BEGIN.match(l) or MD_BEGIN.match(l)) for c in nb["cells"] for l in cc._src(c).splitlines())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nbs", type=Path, default=ROOT / "nbs")
    p.add_argument("--out", type=Path, default=ROOT / "exercises")
    p.add_argument("--ref", default=None, help="git ref the Colab setup cell installs (default: the branch the badges open)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a learner notebook is stale")
    a = p.parse_args(argv)
    cfg = cc.settings()
    ref = a.ref or cc.default_ref(cfg)
    out_rel = "exercises"   # where the learner's copies live in the repository: what the Colab badge opens
    sources = exercise_notebooks(a.nbs)
    stale = []
    for src in sources:
        nb = json.loads(src.read_text(encoding="utf-8"))
        if not count_solutions(nb): stale.append(f"{src}: no solution markers (### BEGIN SOLUTION / <!-- BEGIN SOLUTION -->)")
        try: text = cc.dumps(learner_version(nb, f"{out_rel}/{src.name}", cfg, ref))
        except MarkerError as e:
            print(f"{src}: {e}", file=sys.stderr); return 2
        dest = a.out / src.name
        if dest.is_file() and dest.read_text(encoding="utf-8") == text: continue
        stale.append(str(dest))
        if not a.check:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf-8")
            print(f"{dest}: written from {src}")
    names = {s.name for s in sources}
    for orphan in sorted(a.out.glob("*.ipynb")) if a.out.is_dir() else []:
        if orphan.name not in names:
            stale.append(f"{orphan} (no source in {a.nbs})")
            if not a.check: orphan.unlink(); print(f"{orphan}: removed (no source)")
    if a.check:
        if stale:
            print("Learner exercise notebooks are stale (run: python tools/make_exercises.py):\n  " + "\n  ".join(stale))
            return 1
        print(f"Learner exercise notebooks up to date ({len(sources)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
