"""Exercises: every check passes on the reference, says 'not implemented yet' on the stub and names known
mistakes; the learner notebooks are generated from the solution notebooks and are current; they run as given."""
import contextlib
import importlib
import importlib.util
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from from_noise_to_images import exercises as ex

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "make_exercises.py"
sys.path.insert(0, str(ROOT / "tools"))
import make_exercises as mk  # noqa: E402


def stub(*args, **kwargs): raise NotImplementedError("Exercise: not yet implemented")


def my_euler(model, x, n):
    ts = torch.linspace(1.0, 0.0, n + 1)
    for i in range(n): x = x + (ts[i + 1] - ts[i]) * model(x, ts[i].expand(len(x)))
    return x


def euler_reversed(model, x, n):   # the swapped time direction: t from 0 up to 1
    ts = torch.linspace(0.0, 1.0, n + 1)
    for i in range(n): x = x - (ts[i + 1] - ts[i]) * model(x, ts[i].expand(len(x)))
    return x


def my_unpatchify(tok, p, C):
    g = math.isqrt(tok.shape[1])
    return tok.reshape(-1, g, g, C, p, p).permute(0, 3, 1, 4, 2, 5).reshape(-1, C, g * p, g * p)


def cases():
    "(exercise, reference, wrong answer, words the wrong answer's message must contain, module it needs)"
    from from_noise_to_images.flow import interpolate, flow_matching_loss
    from from_noise_to_images.dit import sincos_2d, explicit_attention
    mse = lambda a, b: ((a - b) ** 2).mean()
    rows = [
        ("1.1", interpolate, lambda x0, x1, t: interpolate(x1, x0, t), "time runs the wrong way", None),
        ("1.2", flow_matching_loss, lambda m, x0, t, x1: mse(m(interpolate(x0, x1, t), t), x0 - x1), "wrong sign", None),
        ("1.3", my_euler, euler_reversed, "did you pass 1 - t to the model, or loop t upward?", None),
        ("2.1", sincos_2d, lambda g, d: torch.cat([sincos_2d(g, d)[:, d // 2:], sincos_2d(g, d)[:, :d // 2]], 1), "row and column are swapped", None),
        ("2.2", explicit_attention, lambda q, k, v: (q @ k.transpose(-2, -1)).softmax(-1) @ v, "1 / sqrt(d)", None),
        ("2.3", my_unpatchify, lambda tok, p, C: tok.reshape(len(tok), C, math.isqrt(tok.shape[1]) * p, -1), "plain reshape", None),
        ("3.1", lambda c, u, w: u + w * (c - u), lambda c, u, w: (1 + w) * c - w * u, "(1 + w) v_c - w v_u convention", "guidance"),
        ("3.2", "guidance.cfg_velocity",
         lambda m, x, t, y, w: m(x, t, y=torch.zeros_like(y)) + w * (m(x, t, y=y) - m(x, t, y=torch.zeros_like(y))),
         "null label is index num_classes", "guidance"),
        ("4.1", "solvers.heun_step", "solvers.euler_step", "that is an Euler step", "solvers"),
        ("4.2", "solvers.midpoint_step", "solvers.heun_step", "that is a Heun step", "solvers"),
    ]
    return rows


CASES = {row[0]: row for row in cases()}


def resolve(fn):
    "Functions named 'module.name' are looked up in the package only when the test runs (chapters 3 and 4)."
    if not isinstance(fn, str): return fn
    mod, name = fn.split(".")
    return getattr(pytest.importorskip(f"from_noise_to_images.{mod}"), name)


def run(exercise, fn):
    out = io.StringIO()
    with contextlib.redirect_stdout(out): res = ex.CHECKS[exercise](fn, return_result=True)
    printed = out.getvalue()
    assert printed.count("\n") == 1 and printed.strip() == res.message, "a check prints exactly its one-line message"
    return res


def need(module):
    if module: pytest.importorskip(f"from_noise_to_images.{module}")


def test_every_check_has_a_case():
    assert sorted(CASES) == sorted(ex.CHECKS)


@pytest.mark.parametrize("exercise", sorted(CASES))
def test_reference_passes(exercise):
    _, ref, _, _, module = CASES[exercise]
    need(module)
    res = run(exercise, resolve(ref))
    assert res.ok and res.message.startswith(f"✓ Exercise {exercise}:"), res.message


@pytest.mark.parametrize("exercise", sorted(CASES))
def test_stub_says_not_yet(exercise):
    need(CASES[exercise][4])
    res = run(exercise, stub)
    assert not res.ok and "not implemented yet" in res.message and "Traceback" not in res.message, res.message


@pytest.mark.parametrize("exercise", sorted(CASES))
def test_wrong_answer_gets_a_helpful_message(exercise):
    _, _, wrong, words, module = CASES[exercise]
    need(module)
    res = run(exercise, resolve(wrong))
    assert not res.ok and res.message.startswith(f"✗ Exercise {exercise}:") and words in res.message, res.message


def euler_one_minus_t(model, x, n):   # steps from t = 1 down to 0 but hands the model 1 - t
    ts = torch.linspace(1.0, 0.0, n + 1)
    for i in range(n): x = x + (ts[i + 1] - ts[i]) * model(x, (1 - ts[i]).expand(len(x)))
    return x


MORE_WRONG = [   # wrong functions a learner might write, whose mistakes the checks name
    ("1.3", euler_one_minus_t, "did you pass 1 - t to the model"),
    ("2.2", lambda q, k, v: (q.transpose(-2, -1) @ k / math.sqrt(q.shape[-1])).softmax(-1) @ v, "the scores are Q K^T"),
    ("3.1", lambda c, u, w: c + w * (c - u), "(1 + w) v_c - w v_u convention"),
    ("4.1", lambda f, x, t, h: x + (h / 2) * (f(x, t) + f(x + h * f(x, t), t - h)), "h is already negative"),
    ("4.2", lambda f, x, t, h: x + h * f(x + (h / 2) * f(x, t), t - h / 2), "h is already negative"),
]


@pytest.mark.parametrize("exercise, wrong, words", MORE_WRONG, ids=[f"{r[0]}-{i}" for i, r in enumerate(MORE_WRONG)])
def test_more_wrong_functions_are_named(exercise, wrong, words):
    need(CASES[exercise][4])
    res = run(exercise, wrong)
    assert not res.ok and words in res.message, res.message


# ---- every named mistake of every check comes out with its own hint
# A check hands `_value_problem(got, want, mistakes, case, hint)` a list of `(what the mistake returns, its hint)` per
# case. Recording those lists on the reference gives every named mistake; handing each one back as the learner's result,
# in every case that lists it, must print its own hint: not ✓ (it equals the reference everywhere), not an earlier
# entry's hint (it equals that one wherever it differs from the reference), not "values differ".

def mistake_key(mistakes, i):
    "An entry's name: its hint and how many entries before it share that hint (cases may list different entries)."
    hint = mistakes[i][1]
    return hint, sum(h == hint for _, h in mistakes[:i])


def recorded_mistakes(exercise):
    "The named mistakes check `exercise` lists on the reference, in order; [] when the package lacks its module."
    _, ref, _, _, module = CASES[exercise]
    if module and importlib.util.find_spec(f"from_noise_to_images.{module}") is None: return []
    if isinstance(ref, str): ref = getattr(importlib.import_module(f"from_noise_to_images.{ref.split('.')[0]}"), ref.split(".")[1])
    keys, real = [], ex._value_problem
    def record(got, want, mistakes, case, generic_hint):
        for i in range(len(mistakes)):
            if (k := mistake_key(mistakes, i)) not in keys: keys.append(k)
        return real(got, want, mistakes, case, generic_hint)
    ex._value_problem = record
    try:
        with contextlib.redirect_stdout(io.StringIO()): res = ex.CHECKS[exercise](ref, return_result=True)
    finally: ex._value_problem = real
    assert res.ok, res.message
    return keys


MISTAKES = [(e, key) for e in sorted(CASES) for key in recorded_mistakes(e)]


def test_every_check_names_mistakes():
    for e in sorted(CASES):
        if CASES[e][4] and importlib.util.find_spec(f"from_noise_to_images.{CASES[e][4]}") is None: continue
        assert any(x == e for x, _ in MISTAKES), f"check {e} names no mistakes"


@pytest.mark.parametrize("exercise, key", MISTAKES, ids=[f"{e}-{i}" for i, (e, _) in enumerate(MISTAKES)])
def test_every_named_mistake_gets_its_own_hint(exercise, key, monkeypatch):
    real = ex._value_problem
    def as_learner(got, want, mistakes, case, generic_hint):   # the learner returned this mistake (where listed)
        got = next((m for i, (m, _) in enumerate(mistakes) if mistake_key(mistakes, i) == key), want)
        return real(got, want, mistakes, case, generic_hint)
    monkeypatch.setattr(ex, "_value_problem", as_learner)
    res = run(exercise, resolve(CASES[exercise][1]))
    hint = key[0]
    assert not res.ok and res.message.startswith(f"✗ Exercise {exercise}: {hint} ("), \
        f"the mistake named {hint!r} got: {res.message}"


@pytest.mark.parametrize("exercise", sorted(CASES))
def test_errors_and_garbage_are_one_line(exercise):
    need(CASES[exercise][4])
    def boom(*a): raise RuntimeError("shape mismatch\nsecond line")
    res = run(exercise, boom)
    assert not res.ok and "raised RuntimeError: shape mismatch second line" in res.message
    res = run(exercise, lambda *a: "not a tensor")
    assert not res.ok and ("torch.Tensor" in res.message or "raised" in res.message), res.message
    assert not run(exercise, 42).ok


def test_wrong_shape_is_reported():
    from from_noise_to_images.flow import interpolate
    res = run("1.1", lambda x0, x1, t: interpolate(x0, x1, t)[:, 0])
    assert not res.ok and "has shape (3, 4, 4), expected (3, 1, 4, 4)" in res.message


def test_missing_chapter_module_is_explained(monkeypatch):
    real = ex.importlib.import_module
    def fake(name, *a):
        if name.endswith((".guidance", ".solvers")): raise ImportError(name)
        return real(name, *a)
    monkeypatch.setattr(ex.importlib, "import_module", fake)
    for exercise in ("3.1", "3.2", "4.1", "4.2"):
        res = run(exercise, lambda *a: 0)
        assert not res.ok and "installed package lacks" in res.message


# ---- generated learner notebooks

def test_learner_versions_are_current():
    r = subprocess.run([sys.executable, str(TOOL), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_fails_when_stale_and_regenerates(tmp_path):
    nbs, out = tmp_path / "nbs", tmp_path / "exercises"
    nbs.mkdir(); out.mkdir()
    for p in mk.exercise_notebooks(ROOT / "nbs"): (nbs / p.name).write_text(p.read_text())
    for p in (ROOT / "exercises").glob("*.ipynb"): (out / p.name).write_text(p.read_text())
    args = [sys.executable, str(TOOL), "--nbs", str(nbs), "--out", str(out)]
    assert subprocess.run(args + ["--check"], capture_output=True).returncode == 0
    src = nbs / "01x_exercises.ipynb"
    text = src.read_text()
    src.write_text(text.replace("(1 - t) * x0 + t * x1", "(1 - t) * x0 + t * x1  # edited"))   # inside a solution:
    assert subprocess.run(args + ["--check"], capture_output=True).returncode == 0           # the learner's copy is unchanged
    src.write_text(text.replace("Write `my_interpolate(x0, x1, t)`", "Write the function `my_interpolate(x0, x1, t)`"))
    r = subprocess.run(args + ["--check"], capture_output=True, text=True)
    assert r.returncode == 1 and "01x_exercises.ipynb" in r.stdout
    (out / "99x_orphan.ipynb").write_text("{}")
    assert subprocess.run(args, capture_output=True).returncode == 0
    assert subprocess.run(args + ["--check"], capture_output=True).returncode == 0
    assert not (out / "99x_orphan.ipynb").exists()


def learner(name):
    return json.loads((ROOT / "exercises" / name).read_text())


def src(cell): return "".join(cell["source"])


@pytest.mark.parametrize("name", [p.name for p in mk.exercise_notebooks(ROOT / "nbs")])
def test_learner_notebook_has_stubs_not_solutions(name):
    sol, lrn = json.loads((ROOT / "nbs" / name).read_text()), learner(name)
    text = "\n".join(src(c) for c in lrn["cells"])
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text and "skip_exec" not in text
    assert "*Answer.*" not in text and "with solutions" not in text
    ids = re.findall(r"### BEGIN SOLUTION (\S+)", "\n".join(src(c) for c in sol["cells"]))
    for i in ids: assert f'raise NotImplementedError("Exercise {i}: not yet implemented' in text
    assert all(not c.get("outputs") for c in lrn["cells"] if c["cell_type"] == "code")
    assert f"blob/main/exercises/{name}" in src(lrn["cells"][0])            # Colab badge opens the learner's copy
    assert "](notation.ipynb)" not in text and ("](../nbs/notation.ipynb)" in text or "notation" not in text)
    # 3-5 exercises, at least one of each kind
    kinds = re.findall(r"^## Exercise \d\.\d \((implement it|predict, then run|open question)\)", text, flags=re.M)
    assert 3 <= len(kinds) <= 5 and {"implement it", "predict, then run", "open question"} <= set(kinds), kinds
    assert len(ids) == kinds.count("implement it")


def test_every_check_is_used_in_a_notebook():
    text = "\n".join(p.read_text() for p in mk.exercise_notebooks(ROOT / "nbs"))
    for f in ex.CHECKS.values(): assert f"{f.__name__}(my_" in text, f.__name__


def test_markers_are_checked():
    with pytest.raises(mk.MarkerError): mk.strip_code("def f():\n    ### BEGIN SOLUTION 1.1\n    return 1\n", "cell")
    with pytest.raises(mk.MarkerError): mk.strip_code("### END SOLUTION\n", "cell")
    with pytest.raises(mk.MarkerError): mk.strip_markdown("<!-- BEGIN SOLUTION -->\ntext", "cell")
    assert mk.strip_code("def f():\n    ### BEGIN SOLUTION 2.1\n    return 1\n    ### END SOLUTION\nx = 1", "c") == \
        'def f():\n    raise NotImplementedError("Exercise 2.1: not yet implemented — write your code here, then run the check cell")\nx = 1'
    assert mk.strip_markdown("a\n<!-- BEGIN SOLUTION | -->\nsecret\n<!-- END SOLUTION -->\nb", "c") == "a\nb"
    assert mk.strip_markdown("<!-- BEGIN SOLUTION -->\nsecret\n<!-- END SOLUTION -->", "c") == mk.DEFAULT_ANSWER


NEEDS = {"03x_exercises.ipynb": "guidance", "04x_exercises.ipynb": "solvers"}


@pytest.mark.parametrize("name", [p.name for p in mk.exercise_notebooks(ROOT / "nbs")])
def test_learner_notebook_runs_and_every_check_says_not_yet(name, monkeypatch):
    "What a learner sees on opening the notebook and running all cells: no traceback, every check 'not implemented yet'."
    if name in NEEDS: pytest.importorskip(f"from_noise_to_images.{NEEDS[name]}")
    import matplotlib; matplotlib.use("Agg")
    monkeypatch.setenv("IN_TEST", "1")
    ns, out = {"__name__": "__main__"}, io.StringIO()
    with contextlib.redirect_stdout(out):
        for cell in learner(name)["cells"]:
            if cell["cell_type"] == "code": exec(compile(src(cell), name, "exec"), ns)
    lines = [l for l in out.getvalue().splitlines() if l.startswith(("✓", "✗"))]
    assert lines and all("not implemented yet" in l for l in lines), lines
