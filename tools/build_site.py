#!/usr/bin/env python
"""Build the course website with Jupyter Book 1, offline, from the notebooks' stored outputs.

Usage: python tools/build_site.py [--nbs nbs] [--src _site_src] [--out _build] [--no-build]

1. Copies every `nbs/*.ipynb` (index first, then sorted; names starting with `_` or `.`
   are skipped) into `_site_src/`, turning nbdev's `#|` directives into Jupyter Book cell
   tags: `hide`, `default_exp` and `include: false` remove the cell; `echo: false` removes
   the input; `output: false` removes the output; `export`/`exporti`/`exports` cells show
   as code. Directive lines are stripped from the code shown, `show_doc` output is made
   safe for MyST (a leading `---` crashes the build), widget outputs keep their text
   fallback, Python warnings in stderr are dropped (they show local paths), the Colab
   badge and setup cells are dropped (pages have a Colab launch button), `name` in
   backticks links to the API reference where `name` is public, and `00_core` to its page.
   A landing notebook that does not name every chapter gets a generated chapter list.
2. Writes one API reference page per package module (Sphinx autodoc, which respects
   `__all__`), and a landing page when `nbs/index.ipynb` does not exist yet.
3. Writes `_config.yml` (from `site/_config.yml`, with values from settings.ini) and
   `_toc.yml` (landing, chapters, API reference), then runs `jupyter-book build`.

The HTML lands in `_build/html`. Nothing is executed (`execute_notebooks: off`), nothing
is downloaded: MathJax 3 is bundled by sphinx-mathjax-offline.
"""
from __future__ import annotations

import argparse
import ast
import configparser
import copy
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SITE_DIR = ROOT / "site"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"  # as in tools/colab_cells.py
COLAB_SETUP_MARKER = "# Colab setup:"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
_DIRECTIVE = re.compile(r"^\s*#\s*\|\s*(.*?)\s*$")


# ---------------------------------------------------------------- settings and discovery
def read_settings(root: Path = ROOT) -> dict:
    cp = configparser.ConfigParser(delimiters=["="], interpolation=None)
    cp.read(root / "settings.ini", encoding="utf-8")
    return dict(cp["DEFAULT"])


def discover_notebooks(nbs: Path) -> list[Path]:
    "All notebooks in `nbs` (not `_*`, not `.*`): `index.ipynb` first, the rest sorted by name."
    nbs_ = sorted(p for p in nbs.glob("*.ipynb") if not p.name.startswith(("_", ".")))
    return sorted(nbs_, key=lambda p: (p.stem != "index", p.name))


def discover_modules(root: Path, lib_path: str) -> list[tuple[str, str | None]]:
    "`(module, source notebook stem or None)` for each public module of the package."
    out = []
    for py in sorted((root / lib_path).rglob("*.py")):
        rel = py.relative_to(root).with_suffix("")
        if any(part.startswith("_") for part in rel.parts): continue
        m = re.search(r"File to edit: (?:\.\./)*(?:\S+/)?([^/\s]+)\.ipynb", py.read_text(encoding="utf-8")[:500])
        out.append((".".join(rel.parts), m.group(1) if m else None))
    return out


def public_symbols(root: Path, lib_path: str) -> dict[str, str]:
    "Short name (`Trainer`, `Trainer.train`) -> full dotted name, for names in a module's `__all__`."
    found: dict[str, set] = {}
    for mod, _ in discover_modules(root, lib_path):
        path = root / Path(*mod.split(".")).with_suffix(".py")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names: list[str] = []
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                try: names = list(ast.literal_eval(node.value))
                except ValueError: names = []
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
                found.setdefault(node.name, set()).add(f"{mod}.{node.name}")
                if isinstance(node, ast.ClassDef):
                    for sub in node.body:
                        if isinstance(sub, ast.FunctionDef) and not sub.name.startswith("_") and ast.get_docstring(sub):
                            found.setdefault(f"{node.name}.{sub.name}", set()).add(f"{mod}.{node.name}.{sub.name}")
    return {k: next(iter(v)) for k, v in found.items() if len(v) == 1}  # ambiguous names stay plain


# ---------------------------------------------------------------- notebook preprocessing
def split_directives(source: str) -> tuple[dict[str, str], str]:
    "nbdev/Quarto `#|` directives at the top of a cell -> ({name: value}, source without them)."
    lines = source.splitlines()
    found: dict[str, str] = {}
    i = 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        if m:
            text = m.group(1)
            name, _, value = text.partition(":") if re.match(r"^[\w-]+\s*:", text) else text.partition(" ")
            found[name.strip().lower().replace("-", "_")] = value.strip()
        elif lines[i].strip(): break
        i += 1
    return found, "\n".join(lines[i:]).strip("\n")


def _false(v: str) -> bool: return v.strip().lower() in {"false", "no", "0"}
def _true(v: str) -> bool: return v.strip().lower() in {"true", "yes", "1", ""}


def directive_tags(d: dict[str, str]) -> list[str]:
    "Jupyter Book tags for a cell's directives."
    if "hide" in d or "default_exp" in d or _false(d.get("include", "true")): return ["remove-cell"]
    tags = []
    if _false(d.get("echo", "true")) or "hide_input" in d: tags.append("remove-input")
    if _false(d.get("output", "true")) or "hide_output" in d: tags.append("remove-output")
    if "code_fold" in d and _true(d["code_fold"]) and "remove-input" not in tags: tags.append("hide-input")
    return tags


def clean_show_doc(md: str) -> str:
    "nbdev `show_doc` markdown -> MyST that neither crashes the build nor adds sections."
    lines = md.strip("\n").splitlines()
    while lines and re.fullmatch(r"\s*(---+|\*\*\*+|___+)\s*", lines[0]): lines.pop(0)
    while lines and re.fullmatch(r"\s*(---+|\*\*\*+|___+)\s*", lines[-1]): lines.pop()
    out = []
    for line in lines:
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        out.append(f"**{m.group(1)}**" if m else line)  # headings inside outputs would enter the toc
    return "\n".join(out).strip("\n") + "\n"


def collapse_cr(text: str) -> str:
    "What a terminal shows for text with carriage returns (tqdm bars): the last rewrite of each line."
    return "\n".join(line.rstrip("\r").split("\r")[-1] for line in text.split("\n"))


_WARNING = re.compile(r"^\S.*:\d+: \w*Warning: .*\n(?:[ \t]+.*\n?)*", re.M)


def strip_warnings(text: str) -> str:
    "Python warnings (`file:line: XWarning: ...` and the source line under it) name local paths: drop them."
    return _WARNING.sub("", text)


_FENCE = re.compile(r"^\s*(```|~~~)")


def _link(m, symbols: dict[str, str], pages: set[str]) -> str:
    name, call = m.group(1), m.group(2) or ""
    if name in symbols: return f"{{py:obj}}`{name}{call} <{symbols[name]}>`"
    if name in pages and not call: return f"[`{name}`]({name}.ipynb)"
    return m.group(0)


def link_symbols(md: str, symbols: dict[str, str], pages: set[str] = frozenset()) -> str:
    "`name` (a public symbol) -> a MyST cross-reference to its API entry, `00_core` (a notebook) -> a link to its page."
    if not symbols and not pages: return md
    out, in_fence = [], False
    for line in md.split("\n"):
        if _FENCE.match(line): in_fence = not in_fence
        if not in_fence:
            line = re.sub(r"(?<![`{}\w\[])`([A-Za-z_0-9][\w.]*?)(\(\))?`(?![`\]])", lambda m: _link(m, symbols, pages), line)
        out.append(line)
    return "\n".join(out)


def is_colab_cell(cell) -> bool:
    "The badge and setup cells of tools/colab_cells.py: the site has its own Colab launch button."
    src = cell.source if isinstance(cell.source, str) else "".join(cell.source)
    return ((cell.cell_type == "markdown" and COLAB_BADGE in src)
            or (cell.cell_type == "code" and src.startswith(COLAB_SETUP_MARKER)))


def convert_cell(cell, symbols: dict[str, str], pages: set[str] = frozenset()):
    "One notebook cell -> the cell Jupyter Book sees, or None to drop it."
    cell = copy.deepcopy(cell)
    tags = list(cell.metadata.get("tags", []))
    if is_colab_cell(cell): return None
    if cell.cell_type == "markdown":
        cell.source = link_symbols(cell.source, symbols, pages)
        return cell
    if cell.cell_type != "code": return cell
    d, cell.source = split_directives(cell.source)
    new = directive_tags(d)
    if "remove-cell" in new: return None
    if not cell.source.strip():
        if not cell.get("outputs"): return None
        new.append("remove-input")
    is_show_doc = "show_doc(" in cell.source
    outputs = []
    for o in cell.get("outputs", []):
        if o.output_type in ("display_data", "execute_result"):
            o.data.pop(WIDGET_MIME, None)  # widget outputs pull require.js from a CDN; keep the text fallback
            if not o.data: continue
            md = o.data.get("text/markdown")
            if md is not None and (is_show_doc or re.match(r"\s*---", md)):
                o.data["text/markdown"] = clean_show_doc(md)
        elif o.output_type == "stream":
            o.text = collapse_cr(o.text)
            if o.name == "stderr":
                o.text = strip_warnings(o.text)
                if not o.text.strip(): continue
        outputs.append(o)
    cell.outputs = outputs
    for t in new:
        if t not in tags: tags.append(t)
    if tags: cell.metadata["tags"] = tags
    return cell


def process_notebook(src: Path, dst: Path, symbols: dict[str, str], pages: set[str] = frozenset()) -> None:
    nb = nbformat.read(src, as_version=4)
    nb.cells = [c for c in (convert_cell(c, symbols, pages) for c in nb.cells) if c is not None]
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, dst)


# ---------------------------------------------------------------- generated pages and config
def landing_page(cfg: dict, chapters: list[Path]) -> str:
    repo = cfg["git_url"].rstrip("/")
    return f"""# {cfg['title']}

{cfg['description']}.

The chapters are Jupyter notebooks: every figure and number on these pages is produced by
the code beside it, and the library they build, `{cfg['lib_path']}`, is pip-installable.

```{{tableofcontents}}
```

## Run it

- **In Colab:** open a chapter and press the rocket button at the top of its page, then
  choose Colab. Pick a GPU runtime; the first cell installs the package.
- **Locally:**

  ```bash
  git clone {repo}
  cd {repo.rsplit('/', 1)[-1]}
  pip install -e ".[dev]"
  jupyter lab nbs/
  ```
"""


def ensure_chapter_list(index: Path, chapters: list[str]) -> None:
    "The landing notebook lists the chapters: if it does not name them all, a generated list is appended."
    nb = nbformat.read(index, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    if "{tableofcontents}" in text or all(c in text for c in chapters): return
    nb.cells.append(nbformat.v4.new_markdown_cell("## Contents\n\n```{tableofcontents}\n```"))
    nbformat.write(nb, index)


def api_page(module: str, chapter: str | None, chapters: set[str]) -> str:
    short = module.split(".", 1)[-1]
    src = f" Written in the chapter [](../{chapter}.ipynb)." if chapter in chapters else ""
    return f"""# {short}

The module `{module}`.{src}

```{{eval-rst}}
.. automodule:: {module}
   :members:
   :undoc-members:
   :show-inheritance:
   :member-order: bysource
```
"""


def write_config(src: Path, cfg: dict) -> None:
    text = (SITE_DIR / "_config.yml").read_text(encoding="utf-8")
    for k in ("title", "author", "copyright", "git_url", "branch", "nbs_path", "version", "doc_host", "doc_baseurl"):
        text = text.replace("{{" + k + "}}", cfg.get(k, ""))
    (src / "_config.yml").write_text(text, encoding="utf-8")
    for extra in SITE_DIR.iterdir():  # static files (css, logo) ride along
        if extra.name not in ("_config.yml",) and extra.is_file(): shutil.copy2(extra, src / extra.name)


def write_toc(src: Path, root_page: str, chapters: list[str], api: list[str]) -> None:
    lines = ["# Generated by tools/build_site.py: do not edit", "format: jb-book", f"root: {root_page}", "parts:",
             "  - caption: Chapters", "    chapters:"]
    lines += [f"      - file: {c}" for c in chapters]
    if api:
        lines += ["  - caption: API reference", "    chapters:"] + [f"      - file: {a}" for a in api]
    (src / "_toc.yml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def prepare(nbs: Path, src: Path, root: Path = ROOT) -> list[str]:
    "Fill `src` with the book's sources. Returns the page names, landing first."
    cfg = read_settings(root)
    lib = cfg.get("lib_path", "from_noise_to_images")
    if src.exists(): shutil.rmtree(src)
    src.mkdir(parents=True)
    symbols = public_symbols(root, lib)
    notebooks = discover_notebooks(nbs)
    stems = {p.stem for p in notebooks}
    for nb in notebooks: process_notebook(nb, src / nb.name, symbols, stems)
    chapters = [p.stem for p in notebooks if p.stem != "index"]
    root_page = "index"
    if notebooks and notebooks[0].stem == "index": ensure_chapter_list(src / "index.ipynb", chapters)
    else: (src / "index.md").write_text(landing_page(cfg, notebooks), encoding="utf-8")
    api = []
    (src / "api").mkdir()
    for mod, chapter in discover_modules(root, lib):
        name = "api/" + mod.split(".", 1)[-1].replace(".", "_")
        (src / f"{name}.md").write_text(api_page(mod, chapter, set(chapters)), encoding="utf-8")
        api.append(name)
    write_config(src, cfg)
    write_toc(src, root_page, chapters, api)
    return [root_page] + chapters + api


def build(src: Path, out: Path, root: Path = ROOT, nbs: Path | None = None) -> None:
    "Run `jupyter-book build`; the HTML goes to `out/html`. The pages' download button gets `nbs`'s originals."
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env.setdefault("OMP_NUM_THREADS", "1")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".jb"
    cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())", "build", str(src), "--path-output", str(tmp), "--builder", "html"]
    subprocess.run(cmd, check=True, env=env, cwd=root)
    html = out / "html"
    if html.exists(): shutil.rmtree(html)
    shutil.move(str(tmp / "_build" / "html"), str(html))
    shutil.rmtree(tmp, ignore_errors=True)
    (html / ".nojekyll").touch()  # GitHub Pages must serve _static/ and _images/
    for nb in discover_notebooks(nbs) if nbs else []:  # not the copies with directives stripped
        if (html / "_sources" / nb.name).exists(): shutil.copy2(nb, html / "_sources" / nb.name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nbs", type=Path, default=ROOT / "nbs", help="notebook folder (default: nbs)")
    p.add_argument("--src", type=Path, default=ROOT / "_site_src", help="generated book sources (default: _site_src)")
    p.add_argument("--out", type=Path, default=ROOT / "_build", help="output folder; HTML in OUT/html (default: _build)")
    p.add_argument("--no-build", action="store_true", help="only write the book sources")
    a = p.parse_args(argv)
    t0 = time.time()
    pages = prepare(a.nbs.resolve(), a.src.resolve())
    print(f"book sources: {len(pages)} pages in {a.src}", flush=True)
    if not a.no_build:
        build(a.src.resolve(), a.out.resolve(), nbs=a.nbs.resolve())
        print(f"site: {a.out.resolve() / 'html' / 'index.html'} ({time.time() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
