"""Sphinx glue for the course website (a Jupyter Book local extension, see site/_config.yml)."""
import re

_INLINE_MATH = re.compile(r"(?<![\\$\w])\$(?=\S)([^$\n]+?)(?<=\S)\$(?![\$\w])")


def docstring_math(app, what, name, obj, options, lines):
    "Docstrings are written for nbdev, in markdown: `$x_t$` becomes :math:`x_t` for autodoc."
    for i, line in enumerate(lines):
        lines[i] = _INLINE_MATH.sub(lambda m: ":math:`" + m.group(1).replace("`", "\\`") + "`", line)


def dedupe_scripts(app, pagename, templatename, context, doctree):
    "Jupyter Book 1 adds sphinx-thebe's inline script twice, a `const` redeclaration error in every page."
    seen, kept = set(), []
    for js in context.get("script_files", []):
        key = (str(getattr(js, "filename", js) or ""), getattr(js, "priority", 0),
               tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items())))  # None and '' alike
        if key not in seen:
            seen.add(key)
            kept.append(js)
    if "script_files" in context: context["script_files"][:] = kept


def setup(app):
    app.connect("autodoc-process-docstring", docstring_math)
    app.connect("html-page-context", dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
