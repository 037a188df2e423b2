"""tools/build_site.py: nbdev directives become Jupyter Book tags, show_doc output builds, chapters are found."""
import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("build_site", ROOT / "tools" / "build_site.py")
bs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bs)


def code(src, outputs=()):
    c = new_code_cell(src)
    c.outputs = list(outputs)
    return c


def test_directives():
    d, src = bs.split_directives("#| export\n#|eval: false\n# | code-fold: true\n\nx = 1\n#| not a directive")
    assert d == {"export": "", "eval": "false", "code_fold": "true"}
    assert src == "x = 1\n#| not a directive"
    assert bs.split_directives("#| default_exp core")[0] == {"default_exp": "core"}
    assert bs.directive_tags({"hide": ""}) == ["remove-cell"]
    assert bs.directive_tags({"default_exp": "core"}) == ["remove-cell"]
    assert bs.directive_tags({"include": "false"}) == ["remove-cell"]
    assert bs.directive_tags({"export": ""}) == []
    assert bs.directive_tags({"exporti": ""}) == []
    assert bs.directive_tags({"echo": "false"}) == ["remove-input"]
    assert bs.directive_tags({"output": "false"}) == ["remove-output"]
    assert bs.directive_tags({"code_fold": "true"}) == ["hide-input"]


def test_convert_cell():
    assert bs.convert_cell(code("#| hide\nfrom nbdev.showdoc import show_doc"), {}) is None
    assert bs.convert_cell(code("#| default_exp core"), {}) is None
    c = bs.convert_cell(code("#| export\ndef f(): pass"), {})
    assert c.source == "def f(): pass" and "tags" not in c.metadata
    c = bs.convert_cell(code("#| echo: false\nplot()"), {})
    assert c.metadata.tags == ["remove-input"]
    out = new_output("display_data", data={"text/plain": "Trainer", "text/markdown": "---\n\n### Trainer\n\n*Train.*\n\n---"})
    c = bs.convert_cell(code("show_doc(Trainer)", [out]), {})
    assert c.outputs[0].data["text/markdown"] == "**Trainer**\n\n*Train.*\n"
    bar = new_output("stream", name="stderr", text="  0%|  | 0/3\r 67%|## | 2/3\r100%|###| 3/3\n")
    w = new_output("display_data", data={"text/plain": "bar", bs.WIDGET_MIME: {"model_id": "x"}})
    c = bs.convert_cell(code("train()", [bar, w]), {})
    assert c.outputs[0].text == "100%|###| 3/3\n" and bs.WIDGET_MIME not in c.outputs[1].data
    warn = new_output("stream", name="stderr", text="/home/me/x/tqdm/auto.py:21: TqdmWarning: IProgress not found.\n"
                                                    "  from .autonotebook import tqdm as notebook_tqdm\n")
    assert bs.convert_cell(code("import tqdm.auto", [warn]), {}).outputs == []
    m = bs.convert_cell(new_markdown_cell("Use `Trainer` and `sample()`, not `x`.\n```\n`Trainer`\n```"),
                        {"Trainer": "pkg.train.Trainer", "sample": "pkg.sampling.sample"})
    assert "{py:obj}`Trainer <pkg.train.Trainer>`" in m.source and "{py:obj}`sample() <pkg.sampling.sample>`" in m.source
    assert "`x`" in m.source and "\n`Trainer`\n" in m.source  # fenced code untouched
    m = bs.convert_cell(new_markdown_cell("See `01_1_flow` and [`01_1_flow`](x.ipynb)."), {}, {"01_1_flow"})
    assert m.source == "See [`01_1_flow`](01_1_flow.ipynb) and [`01_1_flow`](x.ipynb)."


def test_discovery(tmp_path):
    for n in ["02_dit.ipynb", "01_1_flow.ipynb", "index.ipynb", "_scratch.ipynb", "00_core.ipynb"]:
        (tmp_path / n).write_text("{}")
    assert [p.name for p in bs.discover_notebooks(tmp_path)] == ["index.ipynb", "00_core.ipynb", "01_1_flow.ipynb", "02_dit.ipynb"]
    mods = dict(bs.discover_modules(ROOT, "from_noise_to_images"))
    assert mods["from_noise_to_images.core"] == "00_core"
    syms = bs.public_symbols(ROOT, "from_noise_to_images")
    assert syms["get_device"] == "from_noise_to_images.core.get_device"
    assert syms["Trainer.train"] == "from_noise_to_images.train.Trainer.train"


def test_build_with_show_doc(tmp_path):
    "A chapter with nbdev directives and real show_doc output (which starts with `---`) builds."
    pytest.importorskip("jupyter_book")
    from nbdev.showdoc import show_doc
    sys.path.insert(0, str(ROOT))
    from from_noise_to_images.core import get_device
    md = show_doc(get_device)._repr_markdown_()
    assert md.startswith("---")
    nbs = tmp_path / "nbs"; nbs.mkdir()
    nb = new_notebook(cells=[
        new_markdown_cell("# Chapter 9: A test\n\n> One line.\n\nThe path $x_t = (1 - t)\\,x_0 + t\\,x_1$ uses `get_device`."),
        code("#| default_exp nine"),
        code("#| hide\nSECRET_HIDDEN_CELL = 1"),
        code("#| export\ndef nine(): return 9"),
        code("show_doc(get_device)", [new_output("display_data", data={"text/markdown": md, "text/plain": "x"})]),
    ])
    nbformat.write(nb, nbs / "09_test.ipynb")
    bs.prepare(nbs, tmp_path / "src")
    bs.build(tmp_path / "src", tmp_path / "out", nbs=nbs)
    page = (tmp_path / "out" / "html" / "09_test.html").read_text()
    assert "SECRET_HIDDEN_CELL" not in page and "default_exp" not in page
    assert "nine" in page and "#| export" not in page
    assert "<strong>get_device</strong>" in page and "The best available device" in page
    assert 'class="math' in page
    assert re.search(r'href="api/core.html#from_noise_to_images.core.get_device"', page)
    assert (tmp_path / "out" / "html" / "index.html").exists()  # landing page made when nbs has no index
    assert "#| export" in (tmp_path / "out" / "html" / "_sources" / "09_test.ipynb").read_text()  # download: the original


def test_landing_notebook_lists_chapters(tmp_path):
    nbs = tmp_path / "nbs"; nbs.mkdir()
    nbformat.write(new_notebook(cells=[new_markdown_cell("# Course\n\nHello.")]), nbs / "index.ipynb")
    nbformat.write(new_notebook(cells=[new_markdown_cell("# One")]), nbs / "01_one.ipynb")
    pages = bs.prepare(nbs, tmp_path / "src")
    assert pages[:2] == ["index", "01_one"]
    cells = nbformat.read(tmp_path / "src" / "index.ipynb", as_version=4).cells
    assert "{tableofcontents}" in cells[-1].source
    nbformat.write(new_notebook(cells=[new_markdown_cell("# Course\n\n[One](01_one.ipynb)")]), nbs / "index.ipynb")
    bs.prepare(nbs, tmp_path / "src")
    assert len(nbformat.read(tmp_path / "src" / "index.ipynb", as_version=4).cells) == 1  # lists them already
