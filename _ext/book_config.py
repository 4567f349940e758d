"""The book's own Sphinx extension. It does two things.

1. The repository URL is written in one place only, ``repository.url`` in
   ``_config.yml`` (see :mod:`kt_helpers.course`). A page that shows it, such
   as the ``git clone`` command in "How to run", writes ``{{ repository_url }}``,
   also inside code blocks; it is replaced with the configured URL before the
   page is parsed, so a fork that runs ``python -m kt_helpers.course set-repo
   URL`` shows its own URL everywhere.
2. In the API appendix, docstrings name PyTorch, NumPy or standard-library
   objects (``torch.nn.Module``, ``Callable``...). The build is offline, so it
   cannot link them to those projects' documentation; they are shown as code
   instead of as broken links. A reference to a kt_helpers object that the
   API page does not document stays unresolved, so the nitpicky build
   (``-n -W``) still fails on it.
"""

from __future__ import annotations

from typing import Any

PLACEHOLDER = "{{ repository_url }}"


def _replace(app: Any, docname: str, source: list[str]) -> None:
    if PLACEHOLDER not in source[0]:
        return
    # Jupyter Book fills html_theme_options from the repository: block of _config.yml.
    url = (app.config.html_theme_options or {}).get("repository_url")
    if not url:
        raise ValueError(f"{docname} uses {PLACEHOLDER}, but _config.yml sets no repository url. Got {url!r}.")
    source[0] = source[0].replace(PLACEHOLDER, str(url))


def _is_kt_helpers_object(module_name: str | None, target: str) -> bool:
    import importlib
    import inspect

    if target.startswith("kt_helpers.") or target == "kt_helpers":
        return True
    if not module_name or not module_name.startswith("kt_helpers"):
        return False
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    head = target.split(".")[0].rstrip("()")
    if not hasattr(module, head):
        return False
    obj = getattr(module, head)
    if inspect.ismodule(obj):
        home = obj.__name__
    elif inspect.isclass(obj) or inspect.isroutine(obj) or type(obj).__module__ == "typing":
        home = getattr(obj, "__module__", "")
    else:  # a constant (an int, a str, a Path...) defined in the module
        return True
    return str(home).startswith("kt_helpers")


def _outside_reference(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    from docutils import nodes

    if node.get("refdomain") != "py":
        return None
    if _is_kt_helpers_object(node.get("py:module"), node.get("reftarget", "")):
        return None  # ours: must resolve, or the nitpicky build fails
    return nodes.literal(contnode.astext(), contnode.astext())


def setup(app: Any) -> dict[str, Any]:
    app.connect("source-read", _replace)
    app.connect("missing-reference", _outside_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
