"""The Chinese edition (中文版) as a reader sees it, checked in headless Chromium.

``make build`` builds the Chinese site into ``_build/html/zh_CN/`` from the same
sources and the catalogues of ``locales/zh_CN/`` (``scripts/translations.py``).
The crawl of ``tests/site_fixtures.py`` reads it like the English site —
every page reachable from ``zh_CN/index.html``, at desktop and at phone width,
screenshots under ``_build/screenshots/zh_CN/{desktop,phone}/`` — and the
checks of ``tests/test_site.py`` that hold for any page (offline, console,
maths, images, links, widgets, placeholders, phone width) run on it unchanged.
The tests below add what is particular to a translation: every page is there,
in Chinese where translated, linked to its English twin and back; the theme
speaks Chinese; and the search finds a Chinese term of the book.

Needs the built site and Debian's ``chromium`` + ``chromium-driver``; skipped
without them, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys

import pytest

try:  # tests/ on sys.path (rootdir-relative collection)
    from site_fixtures import (
        ROOT, SITE_DIR, ZH_PREFIX, ZH_SCREENSHOT_DIR, ZH_SEARCH_TERM, SiteServer, missing_prerequisite,
        run_crawl, site_path, start_chrome,
    )
    from test_site import (  # the checks that hold for any page, run here on the Chinese crawl
        TOC, TOC_PAGES, report, test_every_equation_is_typeset, test_every_image_loads,
        test_labelled_equations_are_numbered, test_no_broken_internal_link_or_anchor, test_no_console_error,
        test_no_empty_widget_area, test_no_horizontal_overflow_on_a_phone, test_no_placeholder_text,
        test_no_request_leaves_the_site,
    )
except ImportError:  # pragma: no cover - collected as tests.test_site_zh (--import-mode=importlib)
    from .site_fixtures import (
        ROOT, SITE_DIR, ZH_PREFIX, ZH_SCREENSHOT_DIR, ZH_SEARCH_TERM, SiteServer, missing_prerequisite,
        run_crawl, site_path, start_chrome,
    )
    from .test_site import (
        TOC, TOC_PAGES, report, test_every_equation_is_typeset, test_every_image_loads,
        test_labelled_equations_are_numbered, test_no_broken_internal_link_or_anchor, test_no_console_error,
        test_no_empty_widget_area, test_no_horizontal_overflow_on_a_phone, test_no_placeholder_text,
        test_no_request_leaves_the_site,
    )

__all__ = [  # collected here too, with this module's `site` (the Chinese crawl)
    "test_every_equation_is_typeset", "test_every_image_loads", "test_labelled_equations_are_numbered",
    "test_no_broken_internal_link_or_anchor", "test_no_console_error", "test_no_empty_widget_area",
    "test_no_horizontal_overflow_on_a_phone", "test_no_placeholder_text", "test_no_request_leaves_the_site",
]

_spec = importlib.util.spec_from_file_location("book_translations", ROOT / "scripts" / "translations.py")
translations = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("book_translations", translations)
_spec.loader.exec_module(translations)

ZH_PAGES = [ZH_PREFIX + p for p in TOC_PAGES]
WAITING = set(translations.load_settings().get("not_yet_translated") or [])
HAN = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="session")
def site():
    """The crawl of the Chinese site (one browser session for every test of this module)."""
    why = missing_prerequisite()
    if not why and not (SITE_DIR / ZH_PREFIX / "index.html").is_file():
        why = f"No Chinese site at {SITE_DIR / ZH_PREFIX}: build it with `make build` (make build-zh)."
    if why:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{why} The browser tests must run under CI.", pytrace=False)
        pytest.skip(why)
    result = run_crawl(prefix=ZH_PREFIX, search_term=ZH_SEARCH_TERM, screenshot_dir=ZH_SCREENSHOT_DIR)
    ZH_SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    (ZH_SCREENSHOT_DIR / "crawl.json").write_text(
        json.dumps({"site": str(SITE_DIR / ZH_PREFIX), "seconds": round(result.seconds, 1),
                    "pages": sorted(result.pages), "redirects": result.redirects, "search": result.search},
                   indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    print(f"\nCrawled {len(result.pages)} Chinese pages at two widths in {result.seconds:.1f} s")
    return result


def _html(path: str) -> str:
    return (SITE_DIR / path).read_text(encoding="utf-8")


# --------------------------------------------------------------------------- every page, in Chinese


def test_every_page_of_the_toc_is_reachable(site):
    failures = []
    for path in ZH_PAGES:
        if not (SITE_DIR / path).is_file():
            failures.append(f"{path}: not built (it is in _toc.yml)")
        elif path not in site.pages:
            failures.append(f"{path}: built, but no link leads to it from zh_CN/index.html")
        elif not site.pages[path].desktop.get("h1"):
            failures.append(f"{path}: the page has no title (h1)")
    report(failures, "pages of the Chinese site are missing")


def test_the_landing_page_opens_the_chinese_book(site):
    root = ZH_PREFIX + TOC[0][0] + ".html"
    visit = site.redirects.get(ZH_PREFIX + "index.html")
    assert visit, "the Chinese site has no index.html that redirects"
    assert visit["landed"] == root, f"opening zh_CN/index.html, the browser ended on {visit['landed']}, not {root}"


def test_pages_declare_chinese_and_translated_pages_read_in_chinese(site):
    """Every page says lang="zh-CN"; a translated page's title and most of its text are Chinese."""
    failures = []
    for (file, _), path in zip(TOC, ZH_PAGES):
        html = _html(path)
        if not re.search(r'<html[^>]*\blang="zh-CN"', html):
            failures.append(f"{path}: <html> does not declare lang=\"zh-CN\"")
        page = site.pages.get(path)
        if page is None or file in WAITING:
            continue
        if not HAN.search(page.desktop["h1"]):
            failures.append(f"{path}: translated, but its title reads {page.desktop['h1']!r}")
    report(failures, "pages not in Chinese")


def test_figures_are_numbered_in_chinese(site):
    """Figure captions start with 图 N.M (Sphinx's Chinese for "Fig."); translated pages' captions are Chinese."""
    failures = []
    for (file, _), path in zip(TOC, ZH_PAGES):
        for figure in re.findall(r"<figure[^>]*>.*?</figure>", _html(path), flags=re.S):
            caption = re.search(r"<figcaption>(.*?)</figcaption>", figure, flags=re.S)
            if not caption:
                continue
            text = re.sub(r"<[^>]+>", "", caption.group(1))
            if not re.search(r"图 \d+\.\d+", text):
                failures.append(f"{path}: a caption is not numbered 图 N.M: {text.strip()[:60]!r}")
            elif file not in WAITING and len(HAN.findall(text)) < 4:
                failures.append(f"{path}: translated, but a caption is not: {text.strip()[:60]!r}")
    report(failures, "figure captions")


def test_every_page_links_to_its_english_twin_and_back(site):
    failures = []
    for english, chinese in zip(TOC_PAGES, ZH_PAGES):
        page = site.pages.get(chinese)
        if page is None:
            failures.append(f"{chinese}: not reached")
            continue
        switch = [site_path(link["href"], site.base) for link in page.desktop["links"]
                  if link["text"] == "English"]
        if switch != [english]:
            failures.append(f"{chinese}: its 'English' link leads to {switch}, expected [{english!r}]")
        back = re.findall(r'<p class="kt-language-switch"><a [^>]*href="([^"]+)"', _html(english))
        resolved = [os.path.normpath(os.path.join(os.path.dirname(english), h)) for h in back]
        if resolved != [chinese]:
            failures.append(f"{english}: its '中文' link leads to {resolved}, expected [{chinese!r}]")
    report(failures, "pages without a link to their twin")


def test_the_theme_speaks_chinese(site):
    """The theme's own labels come from its zh_CN translations (and the book's search text)."""
    page = _html(ZH_PREFIX + TOC_PAGES[1])
    wanted = {
        "search box": "搜索本书",
        "previous page": "上一页",
        "next page": "下一页",
        "table of contents part caption": "附录",
    }
    missing = [f"{what} ({text})" for what, text in wanted.items() if text not in page]
    assert not missing, f"{ZH_PREFIX + TOC_PAGES[1]} lacks the Chinese labels: {missing}"


def test_sidebar_numbers_chapters_in_chinese(site):
    page = site.pages.get(ZH_PREFIX + TOC_PAGES[0])
    assert page is not None, "the Chinese root page was not reached"
    entries = {site_path(a["href"], site.base): a["text"] for a in page.desktop["sidebar"]}
    failures = []
    for file, number in TOC[1:]:
        path = ZH_PREFIX + file + ".html"
        text = entries.get(path)
        if text is None:
            failures.append(f"{path}: not in the sidebar")
        elif number and not text.startswith(f"{number}. "):
            failures.append(f"{path}: sidebar reads {text!r}, expected it to start with '{number}. '")
        elif file not in WAITING and not HAN.search(text):
            failures.append(f"{path}: translated, but the sidebar reads {text!r}")
    report(failures, "sidebar entries of the Chinese site")


def test_previous_and_next_links_follow_the_toc(site):
    failures = []
    for i, path in enumerate(ZH_PAGES):
        page = site.pages.get(path)
        if page is None:
            continue  # reported by test_every_page_of_the_toc_is_reachable
        prev_expected = ZH_PAGES[i - 1] if i > 0 else None
        next_expected = ZH_PAGES[i + 1] if i + 1 < len(ZH_PAGES) else None
        prev = site_path(page.desktop["prev"], site.base) if page.desktop["prev"] else None
        nxt = site_path(page.desktop["next"], site.base) if page.desktop["next"] else None
        if (prev, nxt) != (prev_expected, next_expected):
            failures.append(f"{path}: previous/next lead to {prev}/{nxt}, expected {prev_expected}/{next_expected}")
    report(failures, "previous/next links of the Chinese site")


def test_search_finds_a_chinese_term_of_the_book(site):
    """Sphinx's Chinese search (words split by jieba): 知识迁移 is found on the pages that use it."""
    search = site.search
    assert search["finished"], f"search for {ZH_SEARCH_TERM} never finished: {search['summary']!r}"
    hits = {site_path(site.base + ZH_PREFIX + hit, site.base) for hit in search["hits"]}
    assert hits, f"search for {ZH_SEARCH_TERM} found nothing ({search['summary']!r})"
    outside = [h for h in hits if not (h and h.startswith(ZH_PREFIX) and (SITE_DIR / h).is_file())]
    assert not outside, f"search results that are not pages of the Chinese site: {outside}"
    # Pages whose Chinese text uses the term must be among the results.
    expected = {ZH_PREFIX + p for p in ("intro.html", "appendices/glossary.html")}
    assert expected <= hits, f"search for {ZH_SEARCH_TERM} misses {sorted(expected - hits)}; it found {sorted(hits)}"


#: Draws a Chinese character and a private-use character (which no font has: the
#: "tofu" box) on a canvas, in the page's own font; equal pixels mean that the
#: browser has no font for Chinese and the reader sees boxes.
CJK_GLYPH_JS = r"""
const font = getComputedStyle(document.querySelector("article") || document.body).fontFamily;
const draw = text => {
  const c = document.createElement("canvas");
  c.width = 64; c.height = 64;
  const g = c.getContext("2d");
  g.font = "40px " + font;
  g.fillText(text, 8, 48);
  return c.toDataURL();
};
return draw("\u8fc1") !== draw("\ue000");
"""


def test_chinese_text_is_drawn_with_a_chinese_font(site):
    """Without a Chinese font the browser draws every character as a box (tofu) and the
    screenshots show nothing readable; the other checks cannot see it."""
    import shutil
    import tempfile

    server = SiteServer(SITE_DIR)
    profile = tempfile.mkdtemp(prefix="kt-chromium-")
    driver = start_chrome(profile)
    try:
        driver.get(server.base + ZH_PAGES[0])
        drawn = driver.execute_script(CJK_GLYPH_JS)
    finally:
        driver.quit()
        server.close()
        shutil.rmtree(profile, ignore_errors=True)
    assert drawn, (
        "the browser has no font for Chinese: the pages and screenshots show boxes. Install one "
        "(`make browser-deps` as root installs fonts-wqy-microhei)"
    )


def test_screenshots_are_written(site):
    failures = []
    for path in site.pages:
        name = path.removeprefix(ZH_PREFIX).removesuffix(".html").replace("/", "__") + ".png"
        for width in ("desktop", "phone"):
            shot = ZH_SCREENSHOT_DIR / width / name
            if not shot.is_file() or shot.stat().st_size == 0:
                failures.append(f"{path}: no {width} screenshot at {shot}")
    report(failures, "screenshots are missing")
