"""The book's three editions: the website, the Colab edition and the student copies.

The chapter notebooks are the single source. They are written in MyST
Markdown, which the website (Jupyter Book) understands and Jupyter and Colab
do not: opened there, a notebook would show ``{cite:t}`hinton2015distilling```,
``{eq}`eq-ch3-fusion``` and every solution under its exercise. This module
writes two editions of every notebook with the markup rendered to plain
Jupyter Markdown::

    python -m kt_helpers.course colab colab      # the Colab edition, committed under colab/
    python -m kt_helpers.course student student  # student copies, without solutions

What is rendered, and how (the text is read with myst-parser's own
markdown-it parser, the bibliography with pybtex and sphinxcontrib-bibtex's
own author-year style, exactly as the website reads them):

- citations: author-year text as the website shows it, linked to the
  references page of the website;
- ``{doc}``, ``{ref}``, ``{numref}``, ``{eq}``: links to the same page and
  anchor on the website, with the text and number the website shows
  ("Fig. 3.4", "Section 3.2.1", "Exercise 4.3", "(3.5)");
- labelled equations: ``\\tag{3.5}``, so that Jupyter's MathJax numbers them
  as the website does; headings get the website's section numbers;
- exercises: a numbered heading and their text; solutions: a collapsed
  ``<details>`` block in the Colab edition, removed from the student copies,
  which get an empty code cell tagged ``answer`` after each exercise;
- gated solutions (``{solution-start}`` ... ``{solution-end}``, whose cells
  are tagged ``solution`` and whose code runs with the notebook): in the Colab
  edition a "Solution to Exercise N" heading, collapsed in JupyterLab
  (``jp-MarkdownHeadingCollapsed``), its Markdown in ``<details>`` blocks and
  its code cells with their code hidden (``jupyter.source_hidden`` for
  Jupyter, a ``# @title`` form with ``cellView: "form"`` for Colab), outputs
  kept; the closing directive is dropped. The student copies leave out every
  cell of a gated solution;
- admonitions: block quotes with a bold title; figures: their number and
  caption in a Markdown cell under the figure.

The numbers are computed the way Sphinx assigns them (``numfig`` with
``numfig_secnum_depth = 1``: figures, equations and exercises are counted per
chapter, in the order of ``_toc.yml``, and sections are numbered as the
numbered parts of the toc number them); ``tests/test_editions.py`` compares
them with the built site's HTML when it exists. Introduced in the appendix
"For instructors".
"""

from __future__ import annotations

import copy
import html
import posixpath
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

__all__ = [
    "ANSWER_TAG",
    "CAPTION_TAG",
    "EDITIONS",
    "Book",
    "EditionError",
    "UnresolvedReference",
    "UnresolvedReferenceWarning",
    "edition_notebook",
    "edition_path",
    "preview_html",
    "website_url",
    "write_edition",
]

#: The editions this module writes, and the folder each is written to by default.
EDITIONS = {"colab": "colab", "student": "student"}
#: Tag of the empty code cell that follows each exercise in a student copy.
ANSWER_TAG = "answer"
#: Tag of the Markdown cell that carries a figure's number and caption.
CAPTION_TAG = "figure-caption"
#: Link texts of ``{numref}`` by kind of target: Sphinx's and sphinx-exercise's defaults.
NUMREF_FORMAT = {"figure": "Fig. %s", "section": "Section %s", "exercise": "Exercise %s", "equation": "Eq. %s"}
#: Directives rendered as a block quote with a bold title (docutils' admonitions).
ADMONITIONS = {
    "attention": "Attention", "caution": "Caution", "danger": "Danger", "error": "Error",
    "hint": "Hint", "important": "Important", "note": "Note", "seealso": "See also",
    "tip": "Tip", "warning": "Warning", "admonition": None,
}
_SENTINEL = "\x00ANSWER\x00"
#: The first line given to a gated solution's code cells in the Colab edition:
#: Colab shows a cell with a ``# @title`` and ``cellView: "form"`` as its title
#: alone, with a "Show code" link; Jupyter reads a comment.
SOLUTION_CODE_TITLE = "# @title Solution code (double-click to show it)"


class EditionError(ValueError):
    """Markup that an edition cannot render (so that nothing is left raw)."""


class UnresolvedReferenceWarning(UserWarning):
    """Issued for each reference an edition could not resolve (see :class:`UnresolvedReference`)."""


class UnresolvedReference(EditionError):
    """A reference to a page or label that the book does not have (the website's
    nitpicky build fails on it too). The editions show the reference's text and
    report it instead of stopping."""


# --------------------------------------------------------------------------- the book


def website_url(root: Path) -> str:
    """The website's address, ending in ``/``.

    ``html.baseurl`` in ``_config.yml`` when it is set; otherwise the GitHub
    Pages address of ``repository.url`` (``https://OWNER.github.io/NAME/``), so
    that a fork (``python -m kt_helpers.course set-repo``) links its own site.
    """
    import yaml

    from kt_helpers import course

    config = yaml.safe_load((Path(root) / "_config.yml").read_text(encoding="utf-8"))
    base = ((config.get("html") or {}).get("baseurl") or "").strip()
    if base:
        return base.rstrip("/") + "/"
    url, _ = course.read_repository(Path(root))
    owner, name = course._parse_repo(url)
    return f"https://{owner.lower()}.github.io/{name}/"


@dataclass
class Target:
    """Something a role can point at: a page, a section, a figure, an equation, an exercise."""

    kind: str  # "doc", "section", "figure", "equation", "exercise"
    doc: str  # the page's name, e.g. "chapters/03_mathematics/01_mapping"
    anchor: str | None  # the id on the page, None for the page itself
    number: str | None  # "3.4", or None when the website shows no number
    title: str  # Markdown: a section's title, a figure's caption, an exercise's title


@dataclass
class _Doc:
    name: str
    path: Path
    secnum: tuple[int, ...] | None  # None: an unnumbered page
    depth: int  # how many levels the toc numbers (sections within the page included)
    title: str = ""
    headings: list[str] = field(default_factory=list)  # section numbers, in order ("" when none)
    exercises: list[Target] = field(default_factory=list)
    figures: dict[int, Target] = field(default_factory=dict)  # by code cell index


def _markdown_parser(extensions: list[str]):
    """myst-parser's markdown-it parser with the book's MyST extensions (``_config.yml``)."""
    from markdown_it.renderer import RendererHTML
    from myst_parser.config.main import MdParserConfig
    from myst_parser.parsers.mdit import create_md_parser

    return create_md_parser(MdParserConfig(enable_extensions=set(extensions)), RendererHTML)


@lru_cache(maxsize=None)
def _directive_class(name: str):
    """The class of a directive, for myst-parser's own option parsing."""
    from docutils.parsers.rst.directives import admonitions
    from docutils.parsers.rst.directives.body import Rubric
    from sphinx.directives.code import CodeBlock
    from sphinx.directives.patches import MathDirective
    from sphinx_exercise.directive import (
        ExerciseDirective,
        SolutionDirective,
        SolutionEndDirective,
        SolutionStartDirective,
    )

    classes = {
        "exercise": ExerciseDirective, "solution": SolutionDirective, "math": MathDirective,
        "solution-start": SolutionStartDirective, "solution-end": SolutionEndDirective,
        "code-block": CodeBlock, "code": CodeBlock, "sourcecode": CodeBlock, "rubric": Rubric,
        "admonition": admonitions.Admonition,
    }
    for key in ADMONITIONS:
        if key != "admonition":
            classes[key] = getattr(admonitions, key.capitalize() if key != "seealso" else "Note")
    return classes.get(name)


class Book:
    """The book as the website numbers it: pages, labels and numbers, and the bibliography.

    Args:
        root: the book's folder (holding ``_config.yml`` and ``_toc.yml``).
    """

    def __init__(self, root: Path):
        import yaml

        self.root = Path(root)
        self.config = yaml.safe_load((self.root / "_config.yml").read_text(encoding="utf-8"))
        self.toc = yaml.safe_load((self.root / "_toc.yml").read_text(encoding="utf-8"))
        extensions = (self.config.get("parse") or {}).get("myst_enable_extensions") or []
        self.md = _markdown_parser(extensions)
        self.website = website_url(self.root)
        self.targets: dict[str, Target] = {}
        self._formatted: dict = {}  # pybtex's formatted entries, by key
        self.docs: dict[str, _Doc] = {}
        for doc in self._toc_docs():
            self.docs[doc.name] = doc
        counters: dict[tuple[str, tuple[int, ...]], int] = {}
        for doc in self.docs.values():
            self._scan(doc, counters)

    # -- toc -------------------------------------------------------------------------------

    def _page_path(self, name: str) -> Path:
        for suffix in (".ipynb", ".md"):
            if (self.root / f"{name}{suffix}").is_file():
                return self.root / f"{name}{suffix}"
        raise EditionError(f"_toc.yml names {name!r}, but there is no {name}.ipynb or {name}.md.")

    def _toc_docs(self) -> Iterator[_Doc]:
        """Every page, in the order Sphinx walks them, with its section number.

        Chapters of numbered parts are numbered on from one part to the next
        (``use_multitoc_numbering``); their sections get ``(chapter, k)``.
        """
        yield _Doc(self.toc["root"], self._page_path(self.toc["root"]), None, 0)
        chapter = 0
        multitoc = (self.config.get("html") or {}).get("use_multitoc_numbering", True)

        def walk(entries, prefix, numbered, depth, offset):
            for k, entry in enumerate(entries, start=1 + offset):
                name = entry["file"].removesuffix(".ipynb").removesuffix(".md")
                secnum = (*prefix, k) if numbered and len(prefix) < depth else None
                yield _Doc(name, self._page_path(name), secnum, depth)
                yield from walk(entry.get("sections", []), secnum or (), numbered and secnum, depth,
                                self._subsections(name) if entry.get("sections") else 0)

        for part in self.toc.get("parts", [{"chapters": self.toc.get("chapters", [])}]):
            numbered = part.get("numbered", False)
            depth = 999 if numbered is True else int(numbered or 0)
            for entry in part["chapters"]:
                name = entry["file"].removesuffix(".ipynb").removesuffix(".md")
                if numbered:
                    chapter += 1
                secnum = (chapter,) if numbered else None
                yield _Doc(name, self._page_path(name), secnum, depth)
                yield from walk(entry.get("sections", []), secnum or (), bool(numbered), depth,
                                self._subsections(name) if entry.get("sections") else 0)
            if not multitoc:
                chapter = 0

    # -- reading a page --------------------------------------------------------------------

    def _subsections(self, name: str) -> int:
        """How many sections a page has right under its title. Its sub-pages are
        numbered after them: Sphinx numbers the toctree that sphinx-external-toc
        appends to the page's last section as more entries of that section."""
        import nbformat

        path = self._page_path(name)
        cells = ([nbformat.v4.new_markdown_cell(path.read_text(encoding="utf-8"))] if path.suffix == ".md"
                 else nbformat.read(path, as_version=4).cells)
        stack: list[int] = []
        count = 0
        for cell in cells:
            if cell.cell_type != "markdown":
                continue
            for tok in self.md.parse(cell.source):
                if tok.type == "heading_open" and tok.level == 0:
                    level = int(tok.tag[1])
                    while len(stack) > 1 and stack[-1] >= level:
                        stack.pop()
                    if len(stack) == 1 and level > stack[0]:
                        count += 1
                    if not stack or level > stack[-1]:
                        stack.append(level)
        return count

    def blocks(self, doc: _Doc) -> list[tuple[int, object]]:
        """The page as ``(cell index, cell)`` pairs; a Markdown page is one cell."""
        import nbformat

        if doc.path.suffix == ".md":
            return [(0, nbformat.v4.new_markdown_cell(doc.path.read_text(encoding="utf-8")))]
        nb = nbformat.read(doc.path, as_version=4)
        return list(enumerate(nb.cells))

    def _next_number(self, counters, kind: str, doc: _Doc) -> str:
        prefix = doc.secnum[:1] if doc.secnum else ()
        key = (kind, prefix)
        counters[key] = counters.get(key, 0) + 1
        return ".".join(str(n) for n in (*prefix, counters[key]))

    def _scan(self, doc: _Doc, counters) -> None:
        """Collect a page's sections, labels, figures, equations and exercises, numbered."""
        stack: list[tuple[int, tuple[int, ...]]] = []  # (heading level, section number)
        children: dict[tuple[int, ...], int] = {}
        pending: list[str] = []
        for index, cell in self.blocks(doc):
            if cell.cell_type == "code":
                figure = (cell.get("metadata", {}).get("mystnb") or {}).get("figure") or {}
                if figure.get("caption") and figure.get("name"):
                    number = self._next_number(counters, "figure", doc)
                    target = Target("figure", doc.name, _make_id(figure["name"]), number, figure["caption"])
                    doc.figures[index] = target
                    self._add(figure["name"], target)
                continue
            if cell.cell_type != "markdown":
                continue
            tokens = self.md.parse(cell.source)
            for i, tok in enumerate(tokens):
                if tok.type == "myst_target":
                    pending.append(tok.content)
                elif tok.type == "heading_open" and tok.level == 0:
                    level, title = int(tok.tag[1]), tokens[i + 1].content
                    if not doc.headings:  # the page's title: the page's own number
                        number = doc.secnum
                        stack = [(level, number or ())]
                    else:
                        while stack and stack[-1][0] >= level:
                            stack.pop()
                        parent = stack[-1][1] if stack else ()
                        if parent and len(parent) < doc.depth:
                            children[parent] = children.get(parent, 0) + 1
                            number = (*parent, children[parent])
                        else:
                            number = None
                        stack.append((level, number or ()))
                    numtext = ".".join(map(str, number)) if number else ""
                    doc.headings.append(numtext)
                    if not doc.title:
                        doc.title = title
                    for label in pending:
                        self._add(label, Target("section", doc.name, _make_id(label), numtext or None, title))
                    pending = []
                elif tok.type in ("math_block_label", "amsmath", "fence", "colon_fence", "paragraph_open"):
                    for label in pending:  # a label on a paragraph: linked, never numbered
                        self._add(label, Target("paragraph", doc.name, _make_id(label), None, ""))
                    pending = []
                    self._scan_block(tok, doc, counters)

    def _scan_block(self, tok, doc: _Doc, counters) -> None:
        if tok.type == "amsmath" and tok.meta.get("numbered") != "*":
            # myst-parser numbers a top-level amsmath environment (with a hidden label)
            self._next_number(counters, "equation", doc)
        elif tok.type == "math_block_label":
            number = self._next_number(counters, "equation", doc)
            self._add(tok.info, Target("equation", doc.name, "equation-" + _make_id(tok.info), number, ""))
        elif tok.type in ("fence", "colon_fence") and tok.info.startswith("{"):
            if _directive_class(tok.info[1:].split("}", 1)[0].strip()) is None:
                return  # a directive of a Markdown page (include, bibliography...): numbers nothing
            name, args, options, body = self.directive(tok)
            if name == "exercise":
                label = options.get("label")
                numbered = "nonumber" not in options
                number = self._next_number(counters, "exercise", doc) if numbered else None
                target = Target("exercise", doc.name, _make_id(label) if label else None, number, args)
                doc.exercises.append(target)
                if label:
                    self._add(label, target)
            elif name == "math" and options.get("label"):
                number = self._next_number(counters, "equation", doc)
                label = options["label"]
                self._add(label, Target("equation", doc.name, "equation-" + _make_id(label), number, ""))
            elif name in ADMONITIONS or name == "solution":
                for inner in self.md.parse("\n".join(body)):
                    if inner.level == 0 and inner.type in ("math_block_label", "fence", "colon_fence"):
                        self._scan_block(inner, doc, counters)

    def _add(self, label: str, target: Target) -> None:
        if label in self.targets and self.targets[label] != target:
            other = self.targets[label]
            raise EditionError(f"The label {label!r} is defined twice: in {other.doc} and in {target.doc}.")
        self.targets[label] = target

    def directive(self, tok) -> tuple[str, str, dict, list[str]]:
        """``(name, arguments, options, body lines)`` of a MyST directive fence,
        parsed by myst-parser with the directive's own option specification."""
        from myst_parser.parsers.directives import parse_directive_text

        match = re.match(r"\{([^}]+)\}(.*)", tok.info)
        name, first_line = match.group(1).strip(), match.group(2).strip()
        cls = _directive_class(name)
        if cls is None:
            raise EditionError(
                f"The directive {{{name}}} has no rendering in the Colab and student editions "
                f"(kt_helpers/editions.py renders {sorted(ADMONITIONS) + ['code-block', 'exercise', 'math', 'rubric', 'solution', 'solution-start', 'solution-end']})."
            )
        result = parse_directive_text(cls, first_line, tok.content)
        return name, " ".join(result.arguments), dict(result.options), list(result.body)

    # -- the bibliography ------------------------------------------------------------------

    @cached_property
    def bibliography(self):
        import pybtex.database

        data = pybtex.database.BibliographyData()
        for name in self.config.get("bibtex_bibfiles", []):
            for key, entry in pybtex.database.parse_file(str(self.root / name)).entries.items():
                data.entries[key] = entry
        return data

    @cached_property
    def _citation_styles(self):
        """sphinxcontrib-bibtex's reference style and pybtex's entry style, as configured."""
        import pybtex.plugin
        from sphinxcontrib.bibtex.plugin import find_plugin

        sphinx = (self.config.get("sphinx") or {}).get("config") or {}
        style = find_plugin("sphinxcontrib.bibtex.style.referencing", sphinx.get("bibtex_reference_style", "label"))()
        formatter = pybtex.plugin.find_plugin("pybtex.style.formatting", sphinx.get("bibtex_default_style", "alpha"))()
        return style, formatter, set(style.role_names())

    def cite(self, role: str, keys: list[str], from_doc: str) -> str:
        """A citation as the website writes it (sphinxcontrib-bibtex's configured
        reference style), in Markdown, linked to the website's references page."""
        import pybtex_docutils
        from sphinxcontrib.bibtex.style.referencing import format_references
        from sphinxcontrib.bibtex.style.template import SphinxReferenceInfo

        style, formatter, role_names = self._citation_styles
        page = self._bibliography_page
        book = self

        class _Builder:  # what sphinxcontrib-bibtex asks of Sphinx's builder: a page's address
            name = "html"

            def get_relative_uri(self, from_doc, to_doc):
                return book.website + to_doc + ".html"

        refs = []
        for key in keys:
            if key not in self.bibliography.entries:
                raise UnresolvedReference(f"{from_doc} cites {key!r}, which is not in {self.config.get('bibtex_bibfiles')}.")
            entry = self.bibliography.entries[key]
            if key not in self._formatted:
                self._formatted[key] = formatter.format_entry(label="", entry=entry)
            info = SphinxReferenceInfo(_Builder(), from_doc, page, "", None, "", "")
            refs.append((entry, self._formatted[key], info))
        role_name = role.split(":", 1)[1] if ":" in role else "p"
        if role_name not in role_names:
            raise EditionError(f"{from_doc} uses {{{role}}}, a citation role the style does not know.")
        rendered = format_references(style, role_name, refs).render(pybtex_docutils.Backend())
        return "".join(_docutils_to_markdown(node) for node in rendered)

    @cached_property
    def _bibliography_page(self) -> str:
        for doc in self.docs.values():
            if doc.path.suffix == ".md" and "{bibliography}" in doc.path.read_text(encoding="utf-8"):
                return doc.name
        raise EditionError("No page of the book holds a {bibliography} directive.")

    # -- links -----------------------------------------------------------------------------

    def url(self, doc: str, anchor: str | None = None) -> str:
        return self.website + doc + ".html" + (f"#{anchor}" if anchor else "")

    def resolve_doc(self, target: str, from_doc: str) -> str:
        name = target.removesuffix(".ipynb").removesuffix(".md")
        name = name.lstrip("/") if name.startswith("/") else posixpath.normpath(
            posixpath.join(posixpath.dirname(from_doc), name)
        )
        if name not in self.docs:
            raise UnresolvedReference(f"{from_doc} links {{doc}}`{target}`, which is not a page of _toc.yml.")
        return name

    def target(self, label: str, from_doc: str) -> Target:
        if label not in self.targets:
            raise UnresolvedReference(f"{from_doc} refers to the label {label!r}, which no page defines.")
        return self.targets[label]


def _make_id(label: str) -> str:
    from docutils.nodes import make_id

    return make_id(label)


def _docutils_to_markdown(node) -> str:
    """The few docutils nodes a citation is made of, as Markdown."""
    from docutils import nodes

    if isinstance(node, str):
        return node
    if isinstance(node, nodes.Text):
        return _escape(node.astext())
    inner = "".join(_docutils_to_markdown(child) for child in node.children)
    if isinstance(node, nodes.reference):
        return f"[{inner}]({node['refuri']})"
    if isinstance(node, nodes.emphasis):
        return f"*{inner}*"
    if isinstance(node, nodes.strong):
        return f"**{inner}**"
    return inner


def _escape(text: str) -> str:
    return re.sub(r"([\\\[\]*_`<>])", r"\\\1", text)


# --------------------------------------------------------------------------- rendering Markdown


@dataclass
class _Context:
    book: Book
    doc: _Doc
    edition: str
    heading_level: int = 1
    heading_index: int = 0
    exercise_index: int = 0
    depth: int = 0  # > 0 inside a directive's body, whose headings are not sections
    gated_title: str = ""  # the title of the gated solution being rendered
    warnings: list = field(default_factory=list)  # unresolved references
    counts: dict = field(default_factory=lambda: {"exercises": 0, "solutions": 0})


def _render_role(name: str, content: str, ctx: _Context) -> str:
    book, doc = ctx.book, ctx.doc.name
    explicit = re.fullmatch(r"(?s)(.*?)\s*<([^<>]+)>", content)
    text, label = (explicit.group(1), explicit.group(2)) if explicit else (None, content.strip())
    if name == "cite" or name.startswith("cite:"):
        return book.cite(name, [k.strip() for k in content.split(",") if k.strip()], doc)
    if name == "doc":
        page = book.resolve_doc(label, doc)
        return f"[{text or book.docs[page].title}]({book.url(page)})"
    if name in ("ref", "numref", "eq"):
        target = book.target(label, doc)
        if name == "eq":
            shown = text or f"({target.number})"
        elif name == "numref" or (name == "ref" and target.kind == "exercise" and not text):
            if target.number is None:
                raise EditionError(f"{doc}: {{{name}}}`{content}` points at an unnumbered {target.kind}.")
            template = text or NUMREF_FORMAT[target.kind]
            shown = template.replace("%s", target.number).replace("{number}", target.number)
            shown = shown.replace("{name}", target.title)
        else:
            shown = text or target.title
            if not shown:
                raise EditionError(f"{doc}: {{ref}}`{content}` points at a paragraph: give it a text, "
                                   f"{{ref}}`text <{label}>`.")
        return f"[{_render_inline_text(shown, ctx)}]({book.url(target.doc, target.anchor)})"
    if name == "math":
        return f"${content}$"
    if name in ("code", "literal", "file", "command", "samp"):
        return f"`{content}`"
    if name in ("term", "abbr", "kbd", "sub", "sup", "guilabel", "dfn", "strong", "emphasis"):
        return {"strong": f"**{content}**", "emphasis": f"*{content}*"}.get(name, text or label)
    raise EditionError(f"{doc}: the role {{{name}}} has no rendering in the Colab and student editions.")


def _solution_title(label: str, ctx: _Context) -> str:
    """"Solution to Exercise 3.2 (Its title)", as the website titles a solution."""
    exercise = ctx.book.target(label, ctx.doc.name)
    title = "Solution to Exercise" + (f" {exercise.number}" if exercise.number else "")
    if exercise.title:
        title += f" ({_render_inline_text(exercise.title, ctx)})"
    return title


def _render_inline_text(text: str, ctx: _Context) -> str:
    """A short Markdown text (a title, a caption) with its roles rendered."""
    return render_markdown(text, ctx).strip()


def _role_spans(tok, lines: list[str], start: int) -> Iterator[tuple[int, int, int, object]]:
    """``(line, column, end column, role token)`` of each role of an inline token.

    The parser gives the roles and the lines of their paragraph; each role is
    located in the source by walking the paragraph's children in order (texts,
    code spans and maths advance the position, so a role shown inside a code
    span is never taken for a real one).
    """
    block = "\n".join(lines[start : tok.map[1]])
    offsets = [0]
    for line in lines[start : tok.map[1]]:
        offsets.append(offsets[-1] + len(line) + 1)
    cursor = 0
    for child in tok.children or []:
        if child.type == "myst_role":
            opening = "{" + child.meta["name"] + "}"
            at = block.find(opening + "`", cursor)
            if at < 0:
                raise EditionError(f"Cannot locate the role {opening} in {block[:80]!r}.")
            ticks = re.match(r"`+", block[at + len(opening) :]).group(0)
            body_start = at + len(opening) + len(ticks)
            end = block.find(ticks, body_start) + len(ticks)
            line = max(i for i, off in enumerate(offsets) if off <= at)
            end_line = max(i for i, off in enumerate(offsets) if off <= end - 1)
            if end_line != line:
                raise EditionError(f"A role spans two lines; keep it on one: {block[at:end]!r}.")
            yield start + line, at - offsets[line], end - offsets[line], child
            cursor = end
        elif child.type in ("text", "code_inline", "math_inline") and child.content:
            found = block.find(child.content, cursor)
            if found >= 0:
                cursor = found + len(child.content)


def _prefixes(line: str, column: int) -> tuple[str, str]:
    """The prefix of a block's first line (``"> "``, ``"- "``) and of its other lines."""
    first = line[:column]
    rest = "".join(ch if ch in "> \t" else " " for ch in first)
    return first, rest


def render_markdown(text: str, ctx: _Context) -> str:
    """Render one Markdown text (a cell, a directive's body) to plain Jupyter Markdown."""
    book = ctx.book
    lines = text.split("\n")
    replace: dict[int, tuple[int, list[str]]] = {}  # first line -> (end line, new lines)
    inline: dict[int, list[tuple[int, int, str]]] = {}
    tokens = book.md.parse(text)
    skip_until = -1
    for i, tok in enumerate(tokens):
        if tok.map and tok.map[0] < skip_until:
            continue
        if tok.type == "front_matter":
            replace[tok.map[0]] = (tok.map[1], [])
        elif tok.type == "myst_target":
            replace[tok.map[0]] = (tok.map[1], [])
        elif tok.type == "heading_open" and tok.level == 0 and ctx.depth == 0:
            level = int(tok.tag[1])
            ctx.heading_level = level
            number = ctx.doc.headings[ctx.heading_index] if ctx.heading_index < len(ctx.doc.headings) else ""
            ctx.heading_index += 1
            line = lines[tok.map[0]]
            if number and line.lstrip().startswith("#"):
                col = len(line) - len(line.lstrip()) + len(tok.markup)
                inline.setdefault(tok.map[0], []).append((col, col, f" {number}."))
        elif tok.type == "inline" and tok.map:
            for line, col, end, role in _role_spans(tok, lines, tok.map[0]):
                try:
                    new = _render_role(role.meta["name"], role.content, ctx)
                except UnresolvedReference as error:
                    ctx.warnings.append(str(error))
                    explicit = re.fullmatch(r"(?s)(.*?)\s*<([^<>]+)>", role.content)
                    new = f"*{explicit.group(1) if explicit else role.content}*"
                inline.setdefault(line, []).append((col, end, new))
        elif tok.type == "math_block_label":
            last = tok.map[1] - 1
            target = book.target(tok.info, ctx.doc.name)
            closing = lines[last]
            at = closing.rfind("$$")
            if closing[:at].strip(" >") == "" and tok.map[1] - tok.map[0] > 1:
                new = [f"{closing[:at]}\\tag{{{target.number}}}", f"{closing[:at]}$$"]
            else:
                new = [f"{closing[:at]} \\tag{{{target.number}}}$$"]
            replace[last] = (last + 1, new)
        elif tok.type in ("fence", "colon_fence") and tok.info.startswith("{"):
            first_line = lines[tok.map[0]]
            column = len(first_line) - len(first_line.lstrip(" >\t-*+0123456789.)"))
            head, rest = _prefixes(first_line, column)
            body = _render_directive(tok, ctx)
            new = [(head if k == 0 else rest) + line if line or ">" in rest else line
                   for k, line in enumerate(body.split("\n"))] if body else []
            replace[tok.map[0]] = (tok.map[1], new)
            skip_until = tok.map[1]
    out: list[str] = []
    n = 0
    while n < len(lines):
        if n in replace:
            end, new = replace[n]
            out.extend(new)
            n = end
            continue
        line = lines[n]
        for col, end, new in sorted(inline.get(n, []), reverse=True):
            line = line[:col] + new + line[end:]
        out.append(line)
        n += 1
    result = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", result).strip("\n")


def _quote(text: str, title: str, md) -> str:
    """A block quote with a bold title. Its display maths is written on one line:
    Jupyter takes the maths out of the Markdown before parsing it, so the ``>``
    that would begin each line of a longer formula would end up in the TeX."""
    lines = text.split("\n") if text else []
    for tok in reversed(md.parse(text)):
        if tok.type in ("math_block", "math_block_label") and tok.level == 0:
            start, end = tok.map
            formula = " ".join(line.strip() for line in tok.content.split("\n") if line.strip())
            lines[start:end] = [f"$$ {formula} $$"]
    lines = [f"**{title}**", ""] + lines
    return "\n".join(("> " + line) if line else ">" for line in lines)


def _render_directive(tok, ctx: _Context) -> str:
    name, args, options, body = ctx.book.directive(tok)
    inner = ""
    if name not in ("code-block", "code", "sourcecode", "math"):
        ctx.depth += 1
        try:
            inner = render_markdown("\n".join(body), ctx)
        finally:
            ctx.depth -= 1
    if name == "exercise":
        exercise = ctx.doc.exercises[ctx.exercise_index]
        ctx.exercise_index += 1
        ctx.counts["exercises"] += 1
        title = "Exercise" + (f" {exercise.number}" if exercise.number else "")
        if args:
            title += f" ({_render_inline_text(args, ctx)})"
        level = "#" * min(ctx.heading_level + 1, 6)
        answer = f"\n\n{_SENTINEL}" if ctx.edition == "student" else ""
        return f"{level} {title}\n\n{inner}{answer}"
    if name == "solution":
        ctx.counts["solutions"] += 1
        if ctx.edition == "student":
            return ""
        return f"<details>\n<summary>{_solution_title(args, ctx)}</summary>\n\n{inner}\n\n</details>"
    if name == "solution-start":  # a gated solution: the cells up to solution-end are its body
        ctx.counts["solutions"] += 1
        if ctx.edition == "student":
            return ""
        ctx.gated_title = _solution_title(args, ctx)
        return f"{'#' * min(ctx.heading_level + 2, 6)} {ctx.gated_title}"
    if name == "solution-end":
        return ""
    if name in ADMONITIONS:
        title = _render_inline_text(args, ctx) if name == "admonition" else ADMONITIONS[name]
        if "dropdown" in options.get("class", []):
            return f"<details>\n<summary>{title}</summary>\n\n{inner}\n\n</details>"
        return _quote(inner, title or "Note", ctx.book.md)
    if name == "rubric":
        return f"**{_render_inline_text(args, ctx)}**"
    if name in ("code-block", "code", "sourcecode"):
        fence = "````" if any(line.startswith("```") for line in body) else "```"
        return f"{fence}{args}\n" + "\n".join(body) + f"\n{fence}"
    if name == "math":
        label = options.get("label")
        tag = f"\n\\tag{{{ctx.book.target(label, ctx.doc.name).number}}}" if label else ""
        return "$$\n" + "\n".join(body).strip("\n") + tag + "\n$$"
    raise EditionError(f"{ctx.doc.name}: the directive {{{name}}} has no rendering.")


# --------------------------------------------------------------------------- notebooks


def edition_path(edition: str, rel: str, prefix: str | None = None) -> str:
    """Where the edition's copy of the book's notebook ``rel`` lives in the repository."""
    folder = EDITIONS[edition] if prefix is None else prefix.strip("/")
    return posixpath.join(folder, rel) if folder else rel


def edition_notebook(book: Book, rel: str, edition: str = "colab", prefix: str | None = None):
    """The Colab or student copy of one notebook of the book.

    Args:
        book: the book (:class:`Book`), which numbers everything.
        rel: the notebook's path in the book, e.g. ``"chapters/02_four_steps.ipynb"``.
        edition: ``"colab"`` (solutions collapsed, outputs kept) or ``"student"``
            (solutions removed, an empty ``answer`` cell after each exercise, no outputs).
        prefix: the folder of the copies in the repository, for the badge
            (default: ``colab`` or ``student``).

    Returns:
        ``(notebook, counts)``, counts of ``exercises`` and ``solutions``
        (removed in a student copy, collapsed in a Colab copy).
    """
    import nbformat

    from kt_helpers import course

    if edition not in EDITIONS:
        raise ValueError(f"The 'edition' must be one of {sorted(EDITIONS)}. Got {edition!r} instead.")
    name = rel.removesuffix(".ipynb")
    if name not in book.docs:
        raise ValueError(f"The notebook {rel!r} is not a page of _toc.yml.")
    doc = book.docs[name]
    source = nbformat.read(doc.path, as_version=4)
    nb = copy.deepcopy(source)
    ctx = _Context(book, doc, edition)
    url, branch = course.read_repository(book.root)
    try:
        spans = course.gated_solutions(source.cells)
    except ValueError as error:
        raise EditionError(f"{rel}: {error}") from None
    starts = {start for start, _, _ in spans}
    ends = {end for _, end, _ in spans}
    gated = {k for start, end, _ in spans for k in range(start, end + 1)}
    cells = []
    for index, cell in enumerate(source.cells):
        cell = copy.deepcopy(cell)
        tags = cell.get("metadata", {}).get("tags", [])
        if index in gated and index not in starts:
            if edition == "student":
                continue  # the solution's cells (its start cell counts it)
            if cell.cell_type == "code":
                _collapse_gated_cell(cell, ctx)  # then on as any code cell
            elif cell.cell_type == "markdown":
                # the solution's text (up to the closing directive) is folded;
                # what follows the directive in the closing cell is not part of it
                cut = course._GATE.search(cell.source) if index in ends else None
                body = cell.source[: cut.start()] if cut else cell.source
                cell.source = render_markdown(body, ctx)
                _collapse_gated_cell(cell, ctx)
                if cut:
                    after = render_markdown(source.cells[index].source[cut.start():], ctx)
                    cell.source = "\n\n".join(part for part in (cell.source, after) if part.strip())
                if cell.source.strip():
                    cells.append(cell)
                continue
        if index in starts and edition == "student":
            ctx.counts["solutions"] += 1
            # only what precedes the directive is kept (normally nothing)
            cell.source = cell.source[: course._GATE.search(cell.source).start()]
            if not cell.source.strip():
                continue
        if course.BADGE_TAG in tags:
            cell.source = course.badge_markdown(url, branch, edition_path(edition, rel, prefix), edition=None)
            cells.append(cell)
            continue
        if cell.cell_type == "code":
            if course.SOLUTION_TAG in tags and index not in gated:  # solution code outside a gated solution
                ctx.counts["solutions"] += 1
                if edition == "student":
                    continue
            if edition == "student":
                cell.outputs, cell.execution_count = [], None
            cells.append(cell)
            if index in doc.figures:
                figure = doc.figures[index]
                caption = f"**{NUMREF_FORMAT['figure'] % figure.number}** {_render_inline_text(figure.title, ctx)}"
                cells.append(nbformat.v4.new_markdown_cell(
                    caption, id=f"{cell.get('id', index)}-caption"[:64], metadata={"tags": [CAPTION_TAG]}
                ))
            continue
        if cell.cell_type != "markdown":
            cells.append(cell)
            continue
        pieces = render_markdown(cell.source, ctx).split(_SENTINEL)
        if index in starts:  # the heading of a gated solution: folded in JupyterLab
            cell.setdefault("metadata", {})["jp-MarkdownHeadingCollapsed"] = True
        for k, piece in enumerate(pieces):
            piece = piece.strip("\n")
            if piece:
                new = copy.deepcopy(cell) if k == 0 else nbformat.v4.new_markdown_cell(
                    id=f"{cell.get('id', index)}-{k}"[:64], metadata=copy.deepcopy(cell.get("metadata", {}))
                )
                new.source = piece
                cells.append(new)
            if k < len(pieces) - 1:
                cells.append(nbformat.v4.new_code_cell(
                    "", id=f"{cell.get('id', index)}-answer{k + 1}"[:64], metadata={"tags": [ANSWER_TAG]}
                ))
    nb.cells = cells
    for message in ctx.warnings:
        warnings.warn(message, UnresolvedReferenceWarning, stacklevel=2)
    return nb, dict(ctx.counts)


def _collapse_gated_cell(cell, ctx: _Context) -> None:
    """Fold a cell of a gated solution in the Colab edition (in place): its
    Markdown (rendered) in a ``<details>`` block, its code hidden in
    Jupyter (``jupyter.source_hidden``) and in Colab (a form: ``# @title`` and
    ``cellView: "form"``), its outputs kept."""
    if cell.cell_type == "code":
        metadata = cell.setdefault("metadata", {})
        metadata.setdefault("jupyter", {})["source_hidden"] = True
        metadata["cellView"] = "form"
        cell.source = f"{SOLUTION_CODE_TITLE}\n{cell.source}"
    elif cell.cell_type == "markdown" and cell.source.strip():
        cell.source = (f"<details>\n<summary>{ctx.gated_title or 'Solution'} (continued)</summary>\n\n"
                       f"{cell.source}\n\n</details>")


def write_edition(outdir: Path, root: Path | None = None, edition: str = "colab",
                  prefix: str | None = None) -> dict[str, dict[str, int]]:
    """Write an edition of every notebook of the book under ``outdir``, mirroring the book's folders.

    Args:
        outdir: the folder to write (created when missing).
        root: the book (default: found from the working directory).
        edition: ``"colab"`` or ``"student"``.
        prefix: the folder of the copies in the repository, for their badges.
            Default: ``outdir`` relative to the book when it is inside it, else
            the edition's name.

    Returns:
        For each notebook (its path in the book), its counts of exercises and solutions.
    """
    import nbformat

    from kt_helpers import course

    root = Path(root) if root else course.find_book_root()
    outdir = Path(outdir)
    if prefix is None:
        try:
            prefix = outdir.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            prefix = EDITIONS[edition]
    book = Book(root)
    report = {}
    for path in course.notebooks(root):
        rel = path.relative_to(root).as_posix()
        nb, counts = edition_notebook(book, rel, edition, prefix)
        target = outdir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        report[rel] = counts
    return report


# --------------------------------------------------------------------------- preview


def preview_html(nb, mathjax_url: str, title: str = "") -> str:
    """A notebook as Jupyter shows it: Markdown cells rendered by a CommonMark
    renderer (markdown-it-py's CommonMark preset; maths kept apart from the
    Markdown, as Jupyter does, and typeset by MathJax from ``mathjax_url``),
    code cells and their text and image outputs."""
    from markdown_it import MarkdownIt
    from mdit_py_plugins.dollarmath import dollarmath_plugin

    md = MarkdownIt("commonmark", {"html": True}).use(
        dollarmath_plugin, allow_labels=False, allow_space=True, allow_digits=True, double_inline=True,
        renderer=lambda content, opts: (
            f"\\[{html.escape(content)}\\]" if opts.get("display_mode") else f"\\({html.escape(content)}\\)"
        ),
    ).enable("table")
    parts = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(f'<div class="cell markdown">{md.render(cell.source)}</div>')
        elif cell.cell_type == "code":
            outs = []
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                if "image/png" in data:
                    outs.append(f'<img src="data:image/png;base64,{data["image/png"].strip()}">')
                elif "text/plain" in data:
                    outs.append(f"<pre>{html.escape(data['text/plain'])}</pre>")
                elif out.get("output_type") == "stream":
                    outs.append(f"<pre>{html.escape(out.get('text', ''))}</pre>")
            parts.append(f'<div class="cell code"><pre class="input">{html.escape(cell.source)}</pre>{"".join(outs)}</div>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{max-width:900px;margin:2em auto;font-family:sans-serif;line-height:1.5}}
.cell.code pre.input{{background:#f5f5f5;padding:.5em}} img{{max-width:100%}}
blockquote{{border-left:4px solid #ccc;margin-left:0;padding-left:1em}}</style>
<script>window.MathJax = {{tex: {{inlineMath: [["\\\\(", "\\\\)"]], displayMath: [["\\\\[", "\\\\]"]], tags: "none"}}}};</script>
<script defer src="{html.escape(mathjax_url)}"></script>
</head><body>{"".join(parts)}</body></html>
"""
