"""A Sphinx extension of this book: values from ``_config.yml`` in the pages' text.

The book's repository URL is written in one place only, ``repository.url`` in
``_config.yml`` (see :mod:`kt_helpers.course`). A page that shows it, such as
the ``git clone`` command in "How to run", writes ``{{ repository_url }}``,
also inside code blocks; this extension replaces it with the configured URL
before the page is parsed, so a fork that runs ``python -m kt_helpers.course
set-repo URL`` shows its own URL everywhere.
"""

from __future__ import annotations

from typing import Any

#: Placeholder → key of ``html_theme_options`` (which Jupyter Book fills from
#: the ``repository:`` block of ``_config.yml``).
PLACEHOLDERS = {
    "{{ repository_url }}": "repository_url",
    "{{ repository_branch }}": "repository_branch",
}


def _replace(app: Any, docname: str, source: list[str]) -> None:
    options = app.config.html_theme_options or {}
    text = source[0]
    for placeholder, key in PLACEHOLDERS.items():
        if placeholder in text:
            value = options.get(key)
            if not value:
                raise ValueError(
                    f"{docname} uses {placeholder}, but _config.yml sets no repository "
                    f"{key.removeprefix('repository_')}. Got {value!r}."
                )
            text = text.replace(placeholder, str(value))
    source[0] = text


def setup(app: Any) -> dict[str, Any]:
    app.connect("source-read", _replace)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
