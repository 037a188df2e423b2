"""The course website in a real browser: headless Chromium on the built site, served from 127.0.0.1.

For every HTML page: it loads (HTTP 200, a title, an article, no uncaught script error); math is
typeset (MathJax `mjx-container` elements on pages with math, no raw `\\(`, `\\[`, `$$` or `$x_0$`
left in the text outside code); every image has loaded (natural width > 0) and chapters show all
their stored figures; every internal link, script, stylesheet and image resolves (HTTP 200, and
`#anchors` exist in the target page); nothing is fetched from another host. Search finds a chapter.
A screenshot of a chapter page lands in `_build/screenshots/chapter.png`: its title, then the first
section with both a figure and math (the content in between is hidden for the picture only).

The site is rebuilt (`python tools/build_site.py`) when it is missing or older than its sources.
Without Chromium the test is skipped, unless `CI` is set: then it fails.
Install it with `apt-get install -y chromium`.
"""
from __future__ import annotations

import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
HTML = BUILD / "html"
SHOT = BUILD / "screenshots" / "chapter.png"
TIME_BUDGET_MS = 10000

# Runs in every page, first thing in <head>: records script errors, waits for the page and for
# MathJax's first typeset, then writes what it saw as JSON into <pre id="fnti-check">, which
# `--dump-dom` prints.
PROBE = r"""<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    if (e.target && e.target !== window) errors.push("resource failed: " + (e.target.src || e.target.href));
    else errors.push(String(e.message) + " at " + e.filename + ":" + e.lineno);
  }, true);
  window.addEventListener("unhandledrejection", function (e) { errors.push("unhandled rejection: " + e.reason); });
  function skip(el) {
    for (var p = el; p; p = p.parentElement)
      if (/^(PRE|CODE|SCRIPT|STYLE|TEXTAREA|NOSCRIPT|MJX-CONTAINER|MJX-ASSISTIVE-MML)$/.test(p.tagName) ||
          p.id === "fnti-check" || p.classList.contains("highlight")) return true;
    return false;
  }
  function report() {
    var w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT), text = [];
    while (w.nextNode()) if (!skip(w.currentNode.parentElement)) text.push(w.currentNode.nodeValue);
    var maths = Array.prototype.slice.call(document.querySelectorAll(".math"));
    var res = {
      title: document.title,
      article: !!document.querySelector("article, [role=main]"),
      errors: errors,
      mathjax: !!(window.MathJax && window.MathJax.version),
      mjx: document.querySelectorAll("mjx-container").length,
      math_nodes: maths.length,
      untypeset: maths.filter(function (m) { return !m.querySelector("mjx-container"); })
                      .map(function (m) { return m.textContent.slice(0, 80); }),
      text: text.join(" "),
      images: Array.prototype.map.call(document.images, function (i) {
        return {src: i.currentSrc || i.src, w: i.naturalWidth, complete: i.complete,
                output: !!i.closest(".cell_output, .output")}; }),
      links: Array.prototype.map.call(document.querySelectorAll("a[href], link[href]"), function (a) { return a.href; }),
      resources: Array.prototype.map.call(document.querySelectorAll("script[src], link[href][rel~=stylesheet], link[href][rel~=icon], img[src], iframe[src]"),
                                          function (e) { return e.src || e.href; }),
      search_hits: Array.prototype.map.call(document.querySelectorAll("#search-results li a"), function (a) { return a.href; })
    };
    var img = document.querySelector(".cell_output img"), sec = img && img.closest("section[id]");
    while (sec && !sec.querySelector("mjx-container") && sec.parentElement) sec = sec.parentElement.closest("section[id]") || null;
    res.shot_anchor = sec ? sec.id : "";  // the screenshot shows this section: a figure and some math
    var shot = /[?&]shot=([^&]+)/.exec(location.search), target = shot && document.getElementById(decodeURIComponent(shot[1]));
    for (var el = target; el && el.tagName !== "ARTICLE" && el !== document.body; el = el.parentElement)
      for (var sib = el.previousElementSibling; sib; sib = sib.previousElementSibling)
        if (!/^H1$/.test(sib.tagName)) sib.style.display = "none";  // screenshot mode: title, then the section
    var pre = document.createElement("pre");
    pre.id = "fnti-check"; pre.style.display = "none";
    pre.textContent = JSON.stringify(res);
    document.body.appendChild(pre);
  }
  function whenSearchDone(cb, n) {  // Sphinx fills the results a few at a time
    var status = document.querySelector("#search-results .search-summary, #search-results p");
    if (!/[?&]q=/.test(location.search) || (status && status.textContent.trim()) || n > 50) cb();
    else setTimeout(function () { whenSearchDone(cb, n + 1); }, 100);
  }
  window.addEventListener("load", function () {
    var ready = (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) || Promise.resolve();
    ready.then(function () {}, function (e) { errors.push("MathJax: " + e); })
         .then(function () { setTimeout(function () { whenSearchDone(report, 0); }, 200); });
  });
})();
</script>"""


# ---------------------------------------------------------------- helpers
def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name): return shutil.which(name)
    return None


def site_is_stale() -> bool:
    index = HTML / "index.html"
    if not index.exists(): return True
    sources = [*(ROOT / "nbs").glob("*.ipynb"), ROOT / "tools" / "build_site.py", ROOT / "settings.ini",
               *(ROOT / "site").glob("*"), *(ROOT / "from_noise_to_images").rglob("*.py")]
    return max(p.stat().st_mtime for p in sources) > index.stat().st_mtime


class Handler(http.server.SimpleHTTPRequestHandler):
    "Serves the site; HTML pages get the probe script first thing in <head>."
    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        f = Path(self.translate_path(path))
        if f.is_dir(): f = f / "index.html"
        if f.suffix == ".html" and f.is_file():
            body = f.read_bytes().decode("utf-8")
            body = re.sub(r"<head([^>]*)>", lambda m: m.group(0) + PROBE, body, count=1)
            data = body.encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            super().do_GET()

    def handle(self):
        try: super().handle()
        except (BrokenPipeError, ConnectionResetError): pass  # the browser dropped a request it no longer needed

    def log_message(self, *args): pass


def chromium_args(exe: str, profile: str) -> list[str]:
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
            "--hide-scrollbars", f"--user-data-dir={profile}", f"--virtual-time-budget={TIME_BUDGET_MS}"]


def probe(exe: str, url: str) -> dict:
    "Load `url` in headless Chromium and return what the probe script saw."
    with tempfile.TemporaryDirectory(prefix="fnti-chromium-") as profile:
        r = subprocess.run(chromium_args(exe, profile) + ["--window-size=1280,900", "--dump-dom", url],
                           capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="fnti-check"[^>]*>(.*?)</pre>', r.stdout, re.S)
    assert m, f"{url}: no probe report (rc {r.returncode}); stderr tail:\n{r.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


def screenshot(exe: str, url: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists(): out.unlink()
    with tempfile.TemporaryDirectory(prefix="fnti-chromium-") as profile:
        subprocess.run(chromium_args(exe, profile) + ["--window-size=1100,1400", f"--screenshot={out}", url],
                       capture_output=True, text=True, timeout=120)


def ids_in(page: Path) -> set[str]:
    return set(re.findall(r'\sid="([^"]+)"', page.read_text(encoding="utf-8")))


def stored_figures(nb: Path) -> int:
    "Image outputs a processed notebook shows (cells and outputs not removed by tags)."
    n = 0
    for c in nbformat.read(nb, as_version=4).cells:
        tags = set(c.metadata.get("tags", []))
        if c.cell_type != "code" or tags & {"remove-cell", "remove-output"}: continue
        n += sum(any(k.startswith("image/") for k in o.get("data", {})) for o in c.outputs)
    return n


RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\$[^$\s][^$\n]*[\\_^][^$\n]*\$")


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def chromium():
    exe = find_chromium()
    if exe is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"): pytest.fail("CI is set but Chromium is missing: apt-get install -y chromium")
        pytest.skip("Chromium is not installed (apt-get install -y chromium); set CI=1 to make this a failure")
    return exe


@pytest.fixture(scope="module")
def site(chromium):
    if site_is_stale():
        subprocess.run([sys.executable, str(ROOT / "tools" / "build_site.py")], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
    assert (HTML / "index.html").exists()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def html_pages() -> list[str]:
    return sorted(p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
                  if not p.relative_to(HTML).parts[0] in ("_static", "_sources"))


# ---------------------------------------------------------------- the test
def test_site_in_browser(chromium, site):
    base = site
    origin = base.rstrip("/")
    pages = html_pages()
    assert "index.html" in pages and any(p.startswith("api/") for p in pages)
    chapters = [p.stem for p in sorted((ROOT / "_site_src").glob("*.ipynb")) if p.stem != "index"]
    assert chapters, "no chapter pages"
    for c in chapters: assert f"{c}.html" in pages, f"chapter {c} has no page"

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        reports = dict(zip(pages, pool.map(lambda p: probe(chromium, base + p), pages)))

    problems: list[str] = []
    targets: dict[str, set[str]] = {}  # internal path -> fragments asked for
    for page, r in reports.items():
        src = (HTML / page).read_text(encoding="utf-8")
        if not r["title"].strip() or not r["article"]: problems.append(f"{page}: no title or no article")
        problems += [f"{page}: {e}" for e in r["errors"]]
        # math
        has_math = 'class="math' in src
        if has_math and (not r["mathjax"] or r["mjx"] == 0):
            problems.append(f"{page}: has math but MathJax typeset nothing (MathJax loaded: {r['mathjax']})")
        problems += [f"{page}: math not typeset: {t!r}" for t in r["untypeset"]]
        for m in RAW_TEX.finditer(r["text"]):
            problems.append(f"{page}: raw TeX in the text: {r['text'][max(0, m.start() - 30):m.end() + 30]!r}")
        # images
        for img in r["images"]:
            if not (img["complete"] and img["w"] > 0): problems.append(f"{page}: image did not load: {img['src']}")
        stem = page[:-5]
        if stem in chapters:
            want, got = stored_figures(ROOT / "_site_src" / f"{stem}.ipynb"), sum(i["output"] for i in r["images"])
            if got < want: problems.append(f"{page}: shows {got} of its {want} stored figures")
        # links and resources
        for url in r["links"] + r["resources"]:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme in ("http", "https") and f"{parts.scheme}://{parts.netloc}" == origin:
                targets.setdefault(parts.path, set()).add(parts.fragment)
            elif url in r["resources"] and parts.scheme in ("http", "https"):
                problems.append(f"{page}: loads {url} from another host (the site must work offline)")

    for path, fragments in sorted(targets.items()):
        try:
            with urllib.request.urlopen(origin + path, timeout=10) as resp: status = resp.status
        except urllib.error.HTTPError as e: status = e.code
        if status != 200:
            problems.append(f"internal link {path}: HTTP {status}"); continue
        f = HTML / urllib.parse.unquote(path).lstrip("/")
        if f.is_dir(): f = f / "index.html"
        if f.suffix == ".html":
            ids = ids_in(f)
            problems += [f"internal link {path}#{frag}: no such anchor" for frag in sorted(fragments)
                         if frag and frag not in ids]

    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:60])
    math_pages = [p for p, r in reports.items() if r["mjx"]]
    assert any(p[:-5] in chapters for p in math_pages), "no chapter page has typeset math"
    assert any(sum(i["output"] for i in reports[f"{c}.html"]["images"]) for c in chapters), ("no chapter shows a figure: commit the notebooks with their outputs "
                                                                           "(python tools/run_notebook.py --preset test nbs/*.ipynb)")

    # search: the index is built and finds the chapters
    hits = probe(chromium, base + "search.html?q=velocity")["search_hits"]
    assert any(re.search(r"/0\d[^/]*\.html", h) for h in hits), f"search for 'velocity' found no chapter: {hits}"

    # screenshot of the first chapter page with both math and a figure
    shot_page = next((f"{c}.html" for c in chapters
                      if reports[f"{c}.html"]["mjx"] and any(i["output"] for i in reports[f"{c}.html"]["images"])),
                     f"{chapters[0]}.html")
    anchor = reports[shot_page].get("shot_anchor")
    screenshot(chromium, base + shot_page + (f"?shot={anchor}" if anchor else ""), SHOT)
    assert SHOT.exists() and SHOT.stat().st_size > 10_000, "screenshot missing or blank"
    print(f"\n{len(pages)} pages checked; screenshot of {shot_page}: {SHOT}")
