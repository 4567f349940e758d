"""The book's Chinese edition: its configuration, its catalogues and their state.

The Chinese site is built from the same sources as the English one, through
Sphinx's internationalisation: every translatable piece of text of a page (a
paragraph, a heading, a figure caption, a table cell, an exercise title) is a
message, and ``locales/zh_CN/LC_MESSAGES/<page>.po`` holds its translation.
A message without a translation, or whose English changed since it was
translated (gettext marks it *fuzzy*), is shown in English.

Commands (run from the book's root, normally through ``make``)::

    python scripts/translations.py config OUT      # the Chinese site's _config.yml (make book)
    python scripts/translations.py extract         # the English messages -> _build/gettext/*.pot
    python scripts/translations.py update          # extract, then sphinx-intl update (make translations)
    python scripts/translations.py status          # per page: messages, translated, fuzzy, missing
    python scripts/translations.py todo PAGE > F   # a page's stale messages, numbered, to translate in F
    python scripts/translations.py apply PAGE F    # write F's translations into the page's catalogue

``tests/test_translations.py`` uses :func:`page_status` and the settings in
``locales/translations.yml`` (the stale threshold and the pages not yet
translated).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LANGUAGE = "zh_CN"
LOCALES = ROOT / "locales"
CATALOGUES = LOCALES / LANGUAGE / "LC_MESSAGES"
SETTINGS = LOCALES / "translations.yml"
#: Where the gettext builder writes one .pot per page (and keeps its doctrees).
GETTEXT_BUILD = ROOT / "_build" / "i18n"
POT_DIR = GETTEXT_BUILD / "_build" / "gettext"

#: What the Chinese build changes in _config.yml (merged into sphinx.config).
CHINESE = {
    "title": "深度学习模型之间的知识迁移",
    "sphinx_config": {
        "language": LANGUAGE,
        "html_theme_options": {"search_bar_text": "搜索本书……"},
        # The link on every page to its English twin, one folder up.
        "book_language_switch": {"root": "../", "lang": "en", "label": "English"},
        # Sphinx's Chinese search index splits words with jieba (a dependency,
        # requirements.txt); without it, it would index single characters.
        "html_search_language": "zh",
    },
}
#: Words jieba must keep whole in the search index: the glossary's terms. Sphinx
#: splits a reader's query only at spaces and punctuation (in the browser, without
#: jieba), so a query such as 知识迁移 finds pages only if the index has that word;
#: jieba alone would index it as 知识 + 迁移. With this dictionary it indexes both.
SEARCH_WORDS = LOCALES / LANGUAGE / "search_words.txt"


def _venv_tool(name: str) -> str:
    """A command of the running Python's environment (jupyter-book, sphinx-intl)."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def pages(root: Path = ROOT) -> list[str]:
    """Every page of the book, as Sphinx names it (``chapters/02_four_steps``), in toc order."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    names = [toc["root"]]

    def walk(items):
        for item in items or []:
            names.append(item["file"])
            walk(item.get("sections"))

    for part in toc.get("parts", [toc]):
        walk(part.get("chapters"))
    return names


def write_config(out: Path, root: Path = ROOT) -> Path:
    """Write the Chinese site's ``_config.yml``: the book's own, plus :data:`CHINESE`.

    Paths in it are made absolute, because Jupyter Book resolves them against
    the folder of the config file, which is not the book's root.
    """
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    config["title"] = CHINESE["title"]
    sphinx_config = config.setdefault("sphinx", {}).setdefault("config", {})
    for key, value in CHINESE["sphinx_config"].items():
        if isinstance(value, dict) and isinstance(sphinx_config.get(key), dict):
            sphinx_config[key] = {**sphinx_config[key], **value}
        else:
            sphinx_config[key] = value
    sphinx_config["html_search_options"] = {"dict": str(SEARCH_WORDS.resolve())}
    sphinx_config["locale_dirs"] = [str((root / d).resolve()) for d in sphinx_config.get("locale_dirs", ["locales"])]
    config["bibtex_bibfiles"] = [str((root / b).resolve()) for b in config.get("bibtex_bibfiles", [])]
    extensions = config.get("sphinx", {}).get("local_extensions") or {}
    for name, folder in extensions.items():
        extensions[name] = str((root / folder).resolve())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return out


def extract(root: Path = ROOT) -> Path:
    """Extract every page's English messages into ``_build/i18n/_build/gettext/<page>.pot``.

    Sphinx's gettext builder through Jupyter Book (the same configuration as
    the site). Incremental: only changed pages are read again.
    """
    subprocess.run(
        [_venv_tool("jupyter-book"), "build", str(root), "--builder", "custom", "--custom-builder", "gettext",
         "--path-output", str(GETTEXT_BUILD), "-W", "-n", "--keep-going", "--quiet"],
        check=True,
    )
    return POT_DIR


def update(root: Path = ROOT) -> None:
    """Extract, then bring every page's catalogue up to date with ``sphinx-intl update``.

    New English messages are added untranslated, changed ones are marked
    fuzzy (with the old translation kept as a suggestion), removed ones are
    dropped (kept as obsolete ``#~`` entries).
    """
    pot_dir = extract(root)
    carried = carry_number_changes(pot_dir, root / "locales" / LANGUAGE / "LC_MESSAGES")
    for page, count in carried.items():
        print(f"{page}: {count} translations carried over a change of numbers only")
    subprocess.run(
        [_venv_tool("sphinx-intl"), "update", "-p", str(pot_dir), "-l", LANGUAGE, "-d", str(root / "locales"),
         "-w", "79"],
        check=True,
    )


_NUMBER = r"(?<![\w.])\d+(?:\.\d+)?(?![\w.]*\d)"


def _renumber(old_id: str, new_id: str, old_string: str) -> str | None:
    """``old_string`` with the numbers that changed from ``old_id`` to ``new_id`` replaced.

    None unless the two ids differ in numbers only and each changed number
    occurs exactly once in the translation (anything else is left to a person).
    """
    import re

    if re.sub(_NUMBER, "#", old_id) != re.sub(_NUMBER, "#", new_id):
        return None
    old_numbers, new_numbers = re.findall(_NUMBER, old_id), re.findall(_NUMBER, new_id)
    result = old_string
    for old, new in zip(old_numbers, new_numbers):
        if old == new:
            continue
        pattern = rf"(?<![\w.]){re.escape(old)}(?![\w]|\.\d)"
        if len(re.findall(pattern, result)) != 1:
            return None
        result = re.sub(pattern, new, result)
    return result


def carry_number_changes(pot_dir: Path, catalogues: Path = CATALOGUES) -> dict[str, int]:
    """Carry translations over English changes of numbers only, before ``sphinx-intl update``.

    ``scripts/execute_notebooks.py`` rewrites every notebook's "**Run time:** N s"
    sentence, and benchmarks rewrite their tables: such a change would
    otherwise make the translation fuzzy on every execution. A translated
    message whose English now differs only in its numbers gets the new
    numbers in its translation (see :func:`_renumber`); every other change is
    left to ``sphinx-intl update``, which marks it fuzzy.
    """
    import re

    from babel.messages.pofile import read_po, write_po

    carried: dict[str, int] = {}
    for pot_file in sorted(pot_dir.rglob("*.pot")):
        page = pot_file.relative_to(pot_dir).with_suffix("").as_posix()
        po_file = catalogues / f"{page}.po"
        if not po_file.is_file():
            continue
        with open(pot_file, "rb") as f:
            template = read_po(f)
        with open(po_file, "rb") as f:
            catalogue = read_po(f)
        by_shape: dict[str, list] = {}
        for message in catalogue:
            if message.id and message.string and not message.fuzzy:
                by_shape.setdefault(re.sub(_NUMBER, "#", message.id), []).append(message)
        count = 0
        for message in template:
            if not message.id or catalogue.get(message.id) is not None:
                continue
            candidates = by_shape.get(re.sub(_NUMBER, "#", message.id), [])
            if len(candidates) != 1:
                continue
            string = _renumber(candidates[0].id, message.id, candidates[0].string)
            if string is not None:
                catalogue.add(message.id, string, context=message.context)
                count += 1
        if count:
            with open(po_file, "wb") as f:
                write_po(f, catalogue, width=79)
            carried[page] = count
    return carried


@dataclass
class PageStatus:
    """How much of a page's English text has a current translation."""

    page: str
    messages: int  # messages of the page's current English text
    translated: int  # with a current translation
    fuzzy: int  # translated once, but the English changed since (shown in English)
    missing: int  # no translation, or no entry in the catalogue at all (shown in English)

    @property
    def stale(self) -> int:
        return self.fuzzy + self.missing

    @property
    def stale_fraction(self) -> float:
        return self.stale / self.messages if self.messages else 0.0


def page_status(page: str, pot_dir: Path = POT_DIR, catalogues: Path = CATALOGUES) -> PageStatus:
    """Compare a page's current English messages (its .pot) with its catalogue (.po).

    A message counts as translated only when the catalogue has the same
    English text with a translation that is not fuzzy: a message that is
    in the .pot but not yet in the .po (``make translations`` not run since
    the English changed) counts as missing.
    """
    from babel.messages.pofile import read_po

    with open(pot_dir / f"{page}.pot", "rb") as f:
        template = read_po(f)
    po_file = catalogues / f"{page}.po"
    catalogue = None
    if po_file.is_file():
        with open(po_file, "rb") as f:
            catalogue = read_po(f)
    messages = translated = fuzzy = missing = 0
    for message in template:
        if not message.id:
            continue  # the header
        messages += 1
        entry = catalogue.get(message.id, message.context) if catalogue is not None else None
        if entry is None or not entry.string:
            missing += 1
        elif entry.fuzzy:
            fuzzy += 1
        else:
            translated += 1
    return PageStatus(page, messages, translated, fuzzy, missing)


def todo(page: str, catalogues: Path = CATALOGUES) -> str:
    """The page's messages that need a translation (missing or fuzzy), numbered.

    The text is a work sheet for :func:`apply`: under each ``### N`` header
    the English (``#`` lines, with the old translation of a fuzzy message),
    then the translation to write in its place. A sheet line ``=`` keeps the
    English as it is (a name, a reference, a formula).
    """
    from babel.messages.pofile import read_po

    with open(catalogues / f"{page}.po", "rb") as f:
        catalogue = read_po(f)
    lines = [f"# Work sheet for locales/{LANGUAGE}/LC_MESSAGES/{page}.po (scripts/translations.py apply)."]
    for number, message in enumerate(catalogue):
        if not message.id or (message.string and not message.fuzzy):
            continue
        lines.append(f"### {number}")
        lines += [f"# {line}" for line in message.id.split("\n")]
        if message.fuzzy and message.string:
            lines += [f"# (old translation) {line}" for line in message.string.split("\n")]
        lines.append("")
    return "\n".join(lines) + "\n"


def apply(page: str, sheet: str, catalogues: Path = CATALOGUES) -> int:
    """Write a work sheet's translations (see :func:`todo`) into the page's catalogue.

    Returns how many messages were translated. A translated message is no
    longer fuzzy.
    """
    import re

    from babel.messages.pofile import read_po, write_po

    po_file = catalogues / f"{page}.po"
    with open(po_file, "rb") as f:
        catalogue = read_po(f)
    messages = list(catalogue)
    written = 0
    for block in re.split(r"^### ", sheet, flags=re.M)[1:]:
        head, _, body = block.partition("\n")
        text = "\n".join(line for line in body.split("\n") if not line.startswith("#")).strip()
        if not text:
            continue
        message = messages[int(head.strip())]
        message.string = message.id if text == "=" else text
        message.flags.discard("fuzzy")
        message.previous_id = ()
        written += 1
    with open(po_file, "wb") as f:
        write_po(f, catalogue, width=79)
    return written


def load_settings(path: Path = SETTINGS) -> dict:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_config = sub.add_parser("config", help="write the Chinese site's _config.yml")
    p_config.add_argument("out", type=Path)
    sub.add_parser("extract", help="extract the English messages into _build/i18n/_build/gettext")
    sub.add_parser("update", help="extract, then update every catalogue (sphinx-intl update)")
    p_status = sub.add_parser("status", help="per page: messages, translated, fuzzy, missing")
    p_status.add_argument("--no-extract", action="store_true", help="use the .pot files already extracted")
    p_todo = sub.add_parser("todo", help="print a page's messages that need a translation, as a work sheet")
    p_todo.add_argument("page", help="the page as in _toc.yml, e.g. chapters/02_four_steps")
    p_apply = sub.add_parser("apply", help="write a work sheet's translations into the page's catalogue")
    p_apply.add_argument("page")
    p_apply.add_argument("sheet", type=Path)
    args = parser.parse_args(argv)
    if args.command == "config":
        print(write_config(args.out))
    elif args.command == "extract":
        print(extract())
    elif args.command == "update":
        update()
    elif args.command == "todo":
        sys.stdout.write(todo(args.page))
    elif args.command == "apply":
        print(f"{apply(args.page, args.sheet.read_text(encoding='utf-8'))} messages translated")
    elif args.command == "status":
        if not args.no_extract:
            extract()
        waiting = set(load_settings().get("not_yet_translated") or [])
        print(f"{'page':55} {'msgs':>5} {'done':>5} {'fuzzy':>5} {'missing':>7}")
        for page in pages():
            s = page_status(page)
            note = "  (not yet translated)" if page in waiting else ""
            print(f"{page:55} {s.messages:5} {s.translated:5} {s.fuzzy:5} {s.missing:7}{note}")
    return 0


if __name__ == "__main__":
    if not shutil.which("jupyter-book") and not Path(sys.executable).with_name("jupyter-book").exists():
        sys.exit("jupyter-book is not installed in this environment (make setup).")
    sys.exit(main())
