"""The Chinese edition's catalogues are in step with the English text.

Sphinx's gettext builder extracts the current English messages of every
page (``scripts/translations.py extract``, into ``_build/i18n``; incremental,
about 25 s the first time) and each page's catalogue,
``locales/zh_CN/LC_MESSAGES/<page>.po``, is compared with them. A message is
stale when its translation is fuzzy (the English changed since it was
translated) or missing (new English, or ``make translations`` not run since
the English changed). Stale messages are shown in English on the Chinese site.

Settings, in ``locales/translations.yml``: ``max_stale_fraction`` (per page)
and ``not_yet_translated``, the pages that nobody has translated yet (they
fall back to English and are not checked, except that a listed page which is
in fact translated must leave the list).

To fix a failure: ``make translations``, then translate the messages the
failure names in the page's .po file (CONTRIBUTING.md, "Translations").
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("book_translations", ROOT / "scripts" / "translations.py")
translations = importlib.util.module_from_spec(_spec)
sys.modules["book_translations"] = translations
_spec.loader.exec_module(translations)

SETTINGS = translations.load_settings()
PAGES = translations.pages(ROOT)
WAITING = list(SETTINGS.get("not_yet_translated") or [])
THRESHOLD = float(SETTINGS["max_stale_fraction"])


@pytest.fixture(scope="session")
def pot_dir() -> Path:
    """The English messages of every page, extracted now from the current sources."""
    return translations.extract(ROOT)


def _stale_messages(page: str, pot_dir: Path, limit: int = 5) -> list[str]:
    from babel.messages.pofile import read_po

    with open(pot_dir / f"{page}.pot", "rb") as f:
        template = read_po(f)
    po_file = translations.CATALOGUES / f"{page}.po"
    catalogue = None
    if po_file.is_file():
        with open(po_file, "rb") as f:
            catalogue = read_po(f)
    out = []
    for message in template:
        if not message.id:
            continue
        entry = catalogue.get(message.id) if catalogue is not None else None
        if entry is None or not entry.string or entry.fuzzy:
            why = "fuzzy" if entry is not None and entry.string else "missing"
            out.append(f"{why}: {message.id[:90]!r}")
        if len(out) >= limit:
            break
    return out


# --------------------------------------------------------------------------- the settings


def test_settings_name_pages_of_the_book():
    assert SETTINGS["language"] == translations.LANGUAGE
    assert 0 <= THRESHOLD < 0.5, f"max_stale_fraction should be a small fraction, got {THRESHOLD}"
    unknown = [p for p in WAITING if p not in PAGES]
    assert not unknown, f"locales/translations.yml lists pages that are not in _toc.yml: {unknown}"
    assert len(set(WAITING)) == len(WAITING), "not_yet_translated lists a page twice"


def test_every_page_has_a_catalogue_and_no_catalogue_is_orphaned():
    missing = [p for p in PAGES if not (translations.CATALOGUES / f"{p}.po").is_file()]
    assert not missing, f"pages without a catalogue (run `make translations`): {missing}"
    orphans = [
        po.relative_to(translations.CATALOGUES).with_suffix("").as_posix()
        for po in translations.CATALOGUES.rglob("*.po")
    ]
    orphans = [p for p in orphans if p not in PAGES]
    assert not orphans, f"catalogues of pages that are no longer in _toc.yml (delete them): {orphans}"


# --------------------------------------------------------------------------- in step with the English


def test_translated_pages_are_not_stale(pot_dir):
    failures = []
    for page in PAGES:
        if page in WAITING:
            continue
        status = translations.page_status(page, pot_dir)
        if status.stale_fraction > THRESHOLD:
            shown = "\n      ".join(_stale_messages(page, pot_dir))
            failures.append(
                f"{page}: {status.stale} of {status.messages} messages stale ({status.fuzzy} fuzzy, "
                f"{status.missing} missing; at most {THRESHOLD:.0%} allowed), e.g.\n      {shown}"
            )
    if failures:
        pytest.fail(
            f"{len(failures)} translated pages are out of step with the English "
            "(`make translations`, then translate the messages named in locales/zh_CN/LC_MESSAGES/<page>.po):\n"
            + "\n".join(f"  - {f}" for f in failures),
            pytrace=False,
        )


def test_pages_listed_as_not_yet_translated_are_not_translated(pot_dir):
    """Keeps ``not_yet_translated`` honest: a page translated since must leave the list,
    so that the test above guards it from then on."""
    done = [
        page for page in WAITING
        if (s := translations.page_status(page, pot_dir)).messages and s.stale_fraction <= THRESHOLD
    ]
    assert not done, f"translated, so remove them from not_yet_translated in locales/translations.yml: {done}"


# --------------------------------------------------------------------------- what a translation keeps


CODE = re.compile(r"`[^`]+`")
#: A role with an explicit title, {ref}`title <target>`: the title is text to translate.
TITLED = re.compile(r"^`[^`]*<([^<>`]+)>`$")
#: A Markdown link, [text](url): its text is often a proper name (a tutorial's title).
LINK = re.compile(r"\[[^\]]*\]\([^)]*\)")
MATH = re.compile(r"\$[^$]+\$")
#: The source document's terms and the book's, as the glossary gives them: where
#: the English uses the term, the translation uses this Chinese word.
TERMS = {
    "knowledge transfer": "知识迁移",
    "model mapping": "模型映射",
    "cross-domain knowledge propagation": "跨领域知识传播",
    "knowledge extraction": "知识提取",
    "knowledge mapping": "知识映射",
    "knowledge fusion": "知识融合",
    "knowledge distillation": "知识蒸馏",
    "soft labels": "软标签",
    "dark knowledge": "暗知识",
    "negative transfer": "负迁移",
    "transfer set": "迁移集",
}


def _translated_entries():
    from babel.messages.pofile import read_po

    for page in PAGES:
        po_file = translations.CATALOGUES / f"{page}.po"
        if page in WAITING or not po_file.is_file():
            continue
        with open(po_file, "rb") as f:
            for message in read_po(f):
                if message.id and message.string and not message.fuzzy:
                    yield page, message.id, message.string


def test_translations_keep_code_maths_and_references():
    """Inline code, maths and roles (``{doc}`...```, ``{numref}`...```) stay exactly as in the English
    (a role's explicit title, ``{ref}`title <target>```, is translated; its target is not)."""
    failures = []
    for page, english, chinese in _translated_entries():
        for pattern in (CODE, MATH):
            wanted = sorted(TITLED.sub(r"<\1>", m) for m in pattern.findall(english))
            got = sorted(TITLED.sub(r"<\1>", m) for m in pattern.findall(chinese))
            if wanted != got:
                lost = sorted(set(wanted) - set(got)) or sorted(set(got) - set(wanted))
                failures.append(f"{page}: {english[:60]!r}: differs in {lost[:3]}")
                break
    assert not failures, "translations change code, maths or references:\n" + "\n".join(failures[:40])


def test_translations_use_the_glossary_terms():
    failures = []
    for page, english, chinese in _translated_entries():
        if english == chinese:
            continue  # kept in English on purpose (a name, a reference)
        prose = LINK.sub("", english).lower()
        for term, word in TERMS.items():
            if term in prose and word not in chinese:
                failures.append(f"{page}: {english[:70]!r} uses {term!r}; the translation lacks {word}")
    assert not failures, "translations that do not use the glossary's terms:\n" + "\n".join(failures[:40])


# --------------------------------------------------------------------------- the machinery itself


def test_page_status_counts_fuzzy_missing_and_changed_english(tmp_path):
    """The staleness check can fail: a changed paragraph, a fuzzy one and a new one are stale."""
    pot = tmp_path / "pot"
    po = tmp_path / "po"
    pot.mkdir()
    po.mkdir()
    (pot / "page.pot").write_text(
        'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
        'msgid "Kept."\nmsgstr ""\n\n'
        'msgid "Changed, new wording."\nmsgstr ""\n\n'
        'msgid "Fuzzy."\nmsgstr ""\n\n'
        'msgid "Brand new."\nmsgstr ""\n',
        encoding="utf-8",
    )
    (po / "page.po").write_text(
        'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
        'msgid "Kept."\nmsgstr "保留。"\n\n'
        'msgid "Changed, old wording."\nmsgstr "旧的措辞。"\n\n'
        '#, fuzzy\nmsgid "Fuzzy."\nmsgstr "模糊。"\n',
        encoding="utf-8",
    )
    status = translations.page_status("page", pot, po)
    assert (status.messages, status.translated, status.fuzzy, status.missing) == (4, 1, 1, 2)
    assert status.stale_fraction == pytest.approx(0.75)


def test_the_chinese_configuration(tmp_path):
    import yaml

    out = translations.write_config(tmp_path / "_config.yml", ROOT)
    config = yaml.safe_load(out.read_text(encoding="utf-8"))
    sphinx = config["sphinx"]["config"]
    assert sphinx["language"] == "zh_CN"
    assert sphinx["book_language_switch"]["root"] == "../"
    assert all(Path(d).is_absolute() and Path(d).is_dir() for d in sphinx["locale_dirs"])
    assert Path(sphinx["locale_dirs"][0], "zh_CN", "LC_MESSAGES").is_dir()
    english = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["sphinx"]["config"]
    assert "language" not in english, "the English site must not set a language"
    assert english["book_language_switch"]["root"] == "zh_CN/"
    # The theme's other options survive the merge (the search text is the only one changed).
    assert sphinx["html_theme_options"]["navbar_persistent"] == []
    assert sphinx["html_theme_options"]["search_bar_text"] != "Search this book..."


def test_the_chinese_search_can_split_words():
    """Sphinx's Chinese search index needs jieba (requirements.txt); without it every
    character would be a word and a search for 知识迁移 would find pages that only
    share characters with it."""
    try:
        import jieba
    except ImportError:
        pytest.fail("jieba is not installed: it is in requirements.txt (make setup)", pytrace=False)
    words = list(jieba.cut_for_search("知识迁移把一个模型学到的知识用于另一个模型"))
    assert "知识" in words and "迁移" in words


def test_a_change_of_numbers_only_keeps_the_translation():
    """The run-time stamp rewritten by every execution does not make a translation stale."""
    renumber = translations._renumber
    old = "**Run time:** 5 s on a 2-core CPU when the book was last executed."
    new = "**Run time:** 7 s on a 2-core CPU when the book was last executed."
    zh = "**运行时间：** 本书上次执行时，在 2 核 CPU 上耗时 5 s。"
    assert renumber(old, new, zh) == "**运行时间：** 本书上次执行时，在 2 核 CPU 上耗时 7 s。"
    assert renumber("1.05 to 1.33", "1.07 to 1.33", "1.05 至 1.33") == "1.07 至 1.33"
    # A change of words, or a number the translation does not show once, is left to a person.
    assert renumber(old, new.replace("book", "site"), zh) is None
    assert renumber("5 s and 5 s", "5 s and 6 s", "5 s，5 s") is None


def test_carry_number_changes_rewrites_the_catalogue(tmp_path):
    pot, po = tmp_path / "pot", tmp_path / "po"
    pot.mkdir()
    po.mkdir()
    header = 'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
    (pot / "page.pot").write_text(header + 'msgid "It took 12 s."\nmsgstr ""\n', encoding="utf-8")
    (po / "page.po").write_text(header + 'msgid "It took 9 s."\nmsgstr "用时 9 s。"\n', encoding="utf-8")
    assert translations.carry_number_changes(pot, po) == {"page": 1}
    status = translations.page_status("page", pot, po)
    assert (status.messages, status.translated) == (1, 1)
    assert "用时 12 s。" in (po / "page.po").read_text(encoding="utf-8")


def test_the_search_index_keeps_the_glossary_terms_whole(tmp_path):
    """The reader's query is split only at spaces in the browser: 知识迁移 must be a word of the index."""
    import yaml

    config = yaml.safe_load(translations.write_config(tmp_path / "_config.yml", ROOT).read_text(encoding="utf-8"))
    dictionary = Path(config["sphinx"]["config"]["html_search_options"]["dict"])
    words = {line.split()[0] for line in dictionary.read_text(encoding="utf-8").splitlines() if line.strip()}
    missing = sorted(set(TERMS.values()) - words)
    assert not missing, f"{dictionary} lacks the glossary terms {missing}"
