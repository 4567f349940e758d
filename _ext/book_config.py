"""The book's own Sphinx extension. It does five things.

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
3. The site's root, ``index.html``, only sends the reader to the first page.
   Left to ``sphinx-external-toc`` it is a bare ``<meta>`` refresh with no
   icon, so a browser opening it asks the server for ``/favicon.ico``, which
   the site does not have (a 404, and an error in the console, whenever the
   request beats the redirect). It is written here as a small HTML page that
   names the book's favicon, has a title and shows a link for a browser that
   does not follow the refresh.
4. The book has a Chinese edition built from the same sources (Sphinx's
   gettext catalogues under ``locales/``; see CONTRIBUTING.md). With
   ``book_language_switch`` set (``_config.yml`` for the English site,
   ``scripts/translations.py config`` for the Chinese one), every page opens
   with a link to the same page in the other language, and names it in its
   ``<head>`` (``<link rel="alternate" hreflang>``). Exercise and solution
   titles (sphinx-exercise gives them no source line, so gettext would skip
   them) are made translatable messages like any heading.
5. In the site without solutions (``make book-no-solutions``: sphinx-exercise's
   ``hide_solutions``), a notebook's solution cells are left out before the
   page is parsed: every cell of a gated solution (``{solution-start}`` ...
   ``{solution-end}``, whose code cells ``hide_solutions`` alone would leave on
   the page) and every cell tagged ``solution`` (``kt_helpers.course.solution_cells``).
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


def _hide_solution_cells(app: Any, docname: str, source: list[str]) -> None:
    if not getattr(app.config, "hide_solutions", False):
        return
    if not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    import nbformat

    from kt_helpers import course

    nb = nbformat.reads(source[0], as_version=4)
    drop = course.solution_cells(nb)
    if drop:
        nb.cells = [cell for k, cell in enumerate(nb.cells) if k not in drop]
        source[0] = nbformat.writes(nb)


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


REDIRECT_PAGE = """<!DOCTYPE html>
<html lang="{language}">
<head>
<meta charset="utf-8" />
<title>{title}</title>
{icon}<meta http-equiv="Refresh" content="0; url={target}" />
</head>
<body>
<p><a href="{target}">{title}</a></p>
</body>
</html>
"""


def _write_landing_page(app: Any, exception: BaseException | None) -> None:
    """Write ``index.html`` as a redirect to the book's first page (see point 3 above).

    Runs before ``sphinx-external-toc``'s own handler, which then finds the
    file there and leaves it alone.
    """
    import html
    from pathlib import Path

    if exception is not None or app.builder.format != "html" or app.config.root_doc == "index":
        return
    if app.builder.name == "dirhtml":
        target = f"{app.config.root_doc}/index.html"
    else:
        target = f"{app.config.root_doc}.html"
    favicon = app.config.html_favicon
    icon = ""
    if favicon:
        href = favicon if "://" in favicon else f"_static/{Path(favicon).name}"
        icon = f'<link rel="icon" href="{html.escape(href)}" />\n'
    page = REDIRECT_PAGE.format(
        language=html.escape(app.config.language or "en"),
        title=html.escape(app.config.html_title or app.config.project),
        icon=icon,
        target=html.escape(target),
    )
    Path(app.outdir, "index.html").write_text(page, encoding="utf-8")


SWITCH_LINK = (
    '<p class="kt-language-switch"><a class="reference external" href="{href}" '
    'hreflang="{lang}" lang="{lang}">{label}</a></p>\n'
)


def _twin_href(switch: dict[str, str], pagename: str) -> str:
    """The relative URL of ``pagename``'s twin in the other language's site.

    ``switch["root"]`` is the other site's root relative to this site's root
    (``zh_CN/`` from the English site, ``../`` from the Chinese one).
    """
    up = "../" * pagename.count("/")
    return f"{up}{switch['root']}{pagename}.html"


def _language_switch(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    import html

    switch = app.config.book_language_switch or {}
    if not switch or app.builder.format != "html" or "body" not in context:
        return
    missing = {"root", "lang", "label"} - set(switch)
    if missing:
        raise ValueError(
            f"book_language_switch needs the keys root, lang and label; missing {sorted(missing)}. Got {switch!r}."
        )
    href = html.escape(_twin_href(switch, pagename))
    lang = html.escape(switch["lang"])
    context["body"] = SWITCH_LINK.format(href=href, lang=lang, label=html.escape(switch["label"])) + context["body"]
    context["metatags"] = context.get("metatags", "") + f'<link rel="alternate" hreflang="{lang}" href="{href}" />\n'


def _exercise_titles_translatable() -> type:
    """A transform that gives sphinx-exercise's titles a source and a line.

    Sphinx extracts (gettext) and translates (``Locale``, priority 20) only
    text nodes that know where they come from; sphinx-exercise builds its
    title nodes without. Runs just before ``Locale``.
    """
    from sphinx.transforms import SphinxTransform

    class ExerciseTitlesTranslatable(SphinxTransform):
        default_priority = 19

        def apply(self, **kwargs: Any) -> None:
            from docutils import nodes

            for node in self.document.findall(nodes.subtitle):
                if node.source or node.__class__.__name__ not in ("exercise_subtitle", "solution_subtitle"):
                    continue
                parent = node.parent
                while parent is not None and not parent.line:
                    parent = parent.parent
                node.source = self.document["source"]
                node.line = parent.line if parent is not None else 1
                # gettext's message is the node's raw source, which sphinx-exercise leaves empty
                # (it does not keep the directive's argument); the rendered text stands in.
                node.rawsource = node.astext()

    return ExerciseTitlesTranslatable


def _toc_captions_translated() -> type:
    """A transform that translates the captions of the table of contents.

    sphinx-external-toc inserts the root page's toctrees (with the part
    captions of ``_toc.yml``, "The book", "Appendices") at priority 100,
    after Sphinx's ``Locale`` transform (20) has translated the page: the
    gettext builder extracts the captions, but nothing would translate them.
    """
    from sphinx.transforms import SphinxTransform

    class TocCaptionsTranslated(SphinxTransform):
        default_priority = 101

        def apply(self, **kwargs: Any) -> None:
            import os

            from sphinx import addnodes
            from sphinx.locale import init as init_locale
            from sphinx.util.i18n import docname_to_domain

            if not self.config.language or self.config.language == "en":
                return
            toctrees = [n for n in self.document.findall(addnodes.toctree) if n.get("rawcaption")]
            if not toctrees:
                return
            domain = docname_to_domain(self.env.docname, self.config.gettext_compact)
            dirs = [os.path.join(self.env.srcdir, d) for d in self.config.locale_dirs]
            catalog, has_catalog = init_locale(dirs, self.config.language, domain)
            if not has_catalog:
                return
            for toctree in toctrees:
                translated = catalog.gettext(toctree["rawcaption"])
                if translated:
                    toctree["caption"] = translated

    return TocCaptionsTranslated


def _extract_exercise_titles(app: Any) -> None:
    """Let the gettext builder extract exercise titles too.

    The builder reads each page after post-transforms, and sphinx-exercise's
    post-transform has by then folded the title into a plain heading that
    no longer knows its source. The titles are read from the stored doctree
    (before post-transforms) instead, where the transform above marked them.
    """
    if app.builder.name != "gettext":
        return
    from docutils import nodes
    from sphinx.util.i18n import docname_to_domain

    builder = app.builder
    original = builder.write_doc

    def write_doc(docname: str, doctree: Any) -> None:
        original(docname, doctree)
        catalog = builder.catalogs[docname_to_domain(docname, app.config.gettext_compact)]
        for node in app.env.get_doctree(docname).findall(nodes.subtitle):
            if node.__class__.__name__ in ("exercise_subtitle", "solution_subtitle") and node.rawsource:
                node.uid = ""
                catalog.add(node.rawsource, node)

    builder.write_doc = write_doc


def setup(app: Any) -> dict[str, Any]:
    app.add_transform(_exercise_titles_translatable())
    app.add_transform(_toc_captions_translated())
    app.connect("builder-inited", _extract_exercise_titles)
    app.add_config_value("book_language_switch", {}, "html", [dict])
    app.connect("html-page-context", _language_switch)
    app.connect("source-read", _replace)
    app.connect("source-read", _hide_solution_cells)
    app.connect("missing-reference", _outside_reference)
    # Priority below the default 500: before sphinx-external-toc writes its bare redirect.
    app.connect("build-finished", _write_landing_page, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
