"""The website as a reader sees it, checked in headless Chromium.

One crawl (``tests/site_fixtures.py``) serves the built site on 127.0.0.1,
opens every page reachable from the landing page at desktop width (1280 px)
and at phone width (390 px), saves a screenshot of each to
``_build/screenshots/{desktop,phone}/`` and records what the browser saw. Each
test below judges one property of every page and lists all failing pages at
once.

Needs the built site (``make build``; ``KT_SITE_DIR`` points elsewhere) and
Debian's ``chromium`` + ``chromium-driver``. Without them the tests are
skipped, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from pathlib import Path
from urllib.parse import unquote, urldefrag

import pytest
import yaml

from kt_helpers import course

try:  # tests/ on sys.path (rootdir-relative collection)
    from site_fixtures import (
        ROOT, SCREENSHOT_DIR, SEARCH_TERM, SITE_DIR, missing_prerequisite, run_crawl, site_path,
    )
except ImportError:  # pragma: no cover - collected as tests.test_site (--import-mode=importlib)
    from .site_fixtures import (
        ROOT, SCREENSHOT_DIR, SEARCH_TERM, SITE_DIR, missing_prerequisite, run_crawl, site_path,
    )


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="session")
def site():
    """The crawl of the whole site (one browser session for every test)."""
    why = missing_prerequisite()
    if why:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{why} The browser tests must run under CI.", pytrace=False)
        pytest.skip(why)
    result = run_crawl()
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    (SCREENSHOT_DIR / "crawl.json").write_text(
        json.dumps(
            {
                "site": str(SITE_DIR),
                "seconds": round(result.seconds, 1),
                "pages": sorted(result.pages),
                "redirects": result.redirects,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"\nCrawled {len(result.pages)} pages at two widths in {result.seconds:.1f} s")
    return result


def report(failures: list[str], what: str) -> None:
    """Fail with every problem listed, one a line."""
    if failures:
        shown = failures[:60]
        more = f"\n  ... and {len(failures) - len(shown)} more" if len(failures) > len(shown) else ""
        pytest.fail(
            f"{len(failures)} {what}:\n" + "\n".join(f"  - {f}" for f in shown) + more,
            pytrace=False,
        )


def _toc_entries() -> list[tuple[str, str | None]]:
    """``(file, number)`` for every page of ``_toc.yml`` in reading order; number like "3.1"."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    entries: list[tuple[str, str | None]] = [(toc["root"], None)]
    chapter = 0

    def sections(items, prefix, numbered):
        for j, item in enumerate(items or [], 1):
            number = f"{prefix}.{j}" if numbered else None
            entries.append((item["file"], number))
            sections(item.get("sections"), number, numbered)

    for part in toc.get("parts", [toc]):
        numbered = bool(part.get("numbered"))
        for item in part.get("chapters", []):
            if numbered:
                chapter += 1
            number = str(chapter) if numbered else None
            entries.append((item["file"], number))
            sections(item.get("sections"), number, numbered)
    return entries


TOC = _toc_entries()
TOC_PAGES = [f + ".html" for f, _ in TOC]


def _source(file: str) -> Path | None:
    for suffix in (".ipynb", ".md"):
        if (ROOT / (file + suffix)).is_file():
            return ROOT / (file + suffix)
    return None


NOTEBOOK_PAGES = {
    f + ".html": f + ".ipynb" for f, _ in TOC if (src := _source(f)) and src.suffix == ".ipynb"
}


def _page(site, path):
    page = site.pages.get(path)
    if page is None:
        pytest.fail(f"{path} was not reached from the landing page", pytrace=False)
    return page


# --------------------------------------------------------------------------- the site as a whole


def test_every_page_of_the_toc_is_reachable(site):
    failures = []
    for path in TOC_PAGES:
        if not (SITE_DIR / path).is_file():
            failures.append(f"{path}: not built (it is in _toc.yml)")
        elif path not in site.pages:
            failures.append(f"{path}: built, but no link leads to it from the landing page")
        elif not site.pages[path].desktop.get("h1"):
            failures.append(f"{path}: the page has no title (h1)")
    report(failures, "pages of the table of contents are missing")


def test_the_landing_page_opens_the_book(site):
    """The site's root (index.html) sends the reader to the book's first page."""
    root = _toc_entries()[0][0] + ".html"
    if "index.html" in site.pages:  # a real page, not a redirect
        assert "index.html" == root, f"index.html is a page of its own, but the book starts at {root}"
        return
    visit = site.redirects.get("index.html")
    assert visit, "the site has no index.html"
    assert visit["target"] == root, f"index.html redirects to {visit['target']}, expected {root}"
    assert visit["landed"] == root, f"opening index.html, the browser ended on {visit['landed']}, not {root}"


def test_the_landing_page_names_an_icon_the_site_has(site):
    """Without an icon link, a browser opening index.html asks for /favicon.ico, which
    the site does not have: a 404 whenever the request beats the redirect. Checked on
    the file, because in the browser it depends on that race."""
    import html as html_lib

    text = (SITE_DIR / "index.html").read_text(encoding="utf-8")
    match = re.search(r'<link[^>]+rel="icon"[^>]+href="([^"]+)"', text)
    assert match, f"index.html names no icon (<link rel=\"icon\" ...>): {text[:300]!r}"
    href = html_lib.unescape(match.group(1))
    assert (SITE_DIR / href).is_file(), f"index.html names the icon {href}, which the site does not have"


def test_every_figure_of_the_book_is_numbered_on_its_page(site):
    """Each figure cell (see test_notebooks_stored) becomes <figure> with a caption
    that starts with its number, "Fig. N.M", on the built page."""
    import nbformat

    failures = []
    for html_path, page in NOTEBOOK_PAGES.items():
        nb = nbformat.read(ROOT / page, as_version=4)
        names = [c.metadata["mystnb"]["figure"]["name"] for c in nb.cells
                 if c.cell_type == "code" and c.metadata.get("mystnb", {}).get("figure", {}).get("name")]
        if not names:
            continue
        html = (SITE_DIR / html_path).read_text(encoding="utf-8")
        for name in names:
            figure = re.search(rf'<figure[^>]*id="{re.escape(name)}".*?</figure>', html, flags=re.S)
            if not figure:
                failures.append(f"{page}: no <figure id={name!r}>")
            elif not re.search(r'<figcaption>.*?Fig\. \d+\.\d+', figure.group(0), flags=re.S):
                failures.append(f"{page}: figure {name} has no numbered caption")
    report(failures, "figures are not numbered")


def test_every_notebook_of_the_book_is_a_page(site):
    in_toc = set(NOTEBOOK_PAGES.values())
    failures = [
        f"{p.relative_to(ROOT).as_posix()}: not in _toc.yml, so not on the website"
        for p in course.notebooks(ROOT)
        if p.relative_to(ROOT).as_posix() not in in_toc
    ]
    report(failures, "notebooks are missing from the website")


def test_screenshots_are_written(site):
    failures = []
    for path in site.pages:
        name = path.removesuffix(".html").replace("/", "__") + ".png"
        for width in ("desktop", "phone"):
            shot = SCREENSHOT_DIR / width / name
            if not shot.is_file() or shot.stat().st_size == 0:
                failures.append(f"{path}: no {width} screenshot at {shot}")
    report(failures, "screenshots are missing")


# --------------------------------------------------------------------------- per page


def _visits(site):
    """``(name, requests, failed requests, console errors)`` of every page the crawl opened:
    the pages, the redirecting landing page and the search page."""
    for path, page in site.pages.items():
        yield path, page.requests, page.failed, page.console
    for path, visit in site.redirects.items():
        yield f"{path} (redirecting)", visit["requests"], visit["failed"], visit["console"]
    search = site.search
    yield f"search.html?q={SEARCH_TERM}", search["requests"], search["failed"], search["console"]


def test_no_request_leaves_the_site(site):
    """Offline: every request goes to the site itself (links elsewhere are fine)."""
    failures = []
    for name, requests, failed, _ in _visits(site):
        for url in dict.fromkeys(requests):
            if not (url.startswith(site.base) or url.startswith(("data:", "blob:"))):
                failures.append(f"{name}: requests {url[:160]}")
        for url, why in dict.fromkeys(failed):
            failures.append(f"{name}: request for {url.replace(site.base, '/')[:160]} failed ({why})")
    report(failures, "requests leave the site or fail")


def test_no_console_error(site):
    failures = [
        f"{name}: {message[:300]}"
        for name, _, _, console in _visits(site)
        for message in dict.fromkeys(console)
    ]
    report(failures, "console errors")


def test_every_equation_is_typeset(site):
    failures = []
    for path, page in site.pages.items():
        seen = page.desktop
        if page.mathjax not in ("typeset", "no-mathjax"):
            failures.append(f"{path}: MathJax did not finish ({page.mathjax})")
        if seen["math_count"] and not seen["mjx_count"]:
            failures.append(
                f"{path}: {seen['math_count']} maths elements but nothing typeset (no mjx-container)"
            )
        failures += [f"{path}: raw TeX left in maths element {m}" for m in seen["raw_math"]]
        failures += [f"{path}: TeX error shown in red: {m}" for m in seen["math_errors"]]
        failures += [f"{path}: raw TeX in the text: {m}" for m in seen["raw_tex_in_text"]]
    report(failures, "equations are not typeset")


def test_labelled_equations_are_numbered(site):
    failures = []
    for path, page in site.pages.items():
        for eq in page.desktop["equations"]:
            if not eq["eqno"] or not re.fullmatch(r"\(\d+(\.\d+)*\)", eq["eqno"]):
                failures.append(f"{path}: equation #{eq['id']} shows no number (got {eq['eqno']!r})")
        for ref in page.desktop["eq_refs"]:
            if not re.search(r"\(\d+(\.\d+)*\)|\d", ref["text"]):
                failures.append(f"{path}: reference to {ref['href']} reads {ref['text']!r}, not a number")
    report(failures, "labelled equations without numbers")


def each_page(site, key: str, describe=str) -> list[str]:
    """One line per item found under ``key`` on any page (desktop width): "page: what"."""
    return [f"{path}: {describe(item)}" for path, page in site.pages.items() for item in page.desktop[key]]


def test_every_image_loads(site):
    report(each_page(site, "broken_images", lambda src: f"image {src} did not load"), "images do not load")


def test_no_empty_widget_area(site):
    report(each_page(site, "empty_widgets"), "empty widget areas")


def test_no_broken_internal_link_or_anchor(site):
    problems: dict[str, list[str]] = {}
    for path, page in site.pages.items():
        for link in page.desktop["links"]:
            target = site_path(link["href"], site.base)
            if target is None:
                continue
            fragment = unquote(urldefrag(link["href"])[1])
            problem = None
            if not (SITE_DIR / target).is_file():
                problem = f"link {link['raw']} ('{link['text']}'): {target} does not exist"
            elif fragment and target in site.pages and fragment not in site.pages[target].desktop["ids"]:
                problem = f"link {link['raw']} ('{link['text']}'): no element with id '{fragment}' on {target}"
            if problem:
                problems.setdefault(problem, []).append(path)
        for name in page.desktop["unresolved"]:
            problems.setdefault(f"unresolved cross-reference '{name}', shown as plain text", []).append(path)
    failures = []
    for problem, pages in problems.items():
        where = ", ".join(pages[:3]) + (f" and {len(pages) - 3} more pages" if len(pages) > 3 else "")
        failures.append(f"{where}: {problem}")
    report(failures, "broken internal links, anchors or cross-references")


def test_no_placeholder_text(site):
    failures = each_page(site, "placeholders", lambda text: f"placeholder left in the text: {text}")
    report(failures, "placeholders where the reader expects text")


def test_no_horizontal_overflow_on_a_phone(site):
    failures = []
    for path, page in site.pages.items():
        o = page.overflow
        vw = o["viewport"]
        wrong = []
        if o["doc_scroll_width"] > vw + 1 or o["inner_width"] > vw + 1:
            wide = max(o["doc_scroll_width"], o["inner_width"])
            wrong.append(f"the page scrolls sideways ({wide} px wide on a {vw} px screen)")
        if o["container_scroll_width"] and o["container_scroll_width"] > vw + 1:
            wrong.append(f"the text column scrolls sideways ({o['container_scroll_width']} px wide)")
        if o["container"] is None:
            wrong.append("no article container found")
        elif o["container_right"] > vw + 1 or o["container_left"] < -1 or o["container_width"] > vw + 1:
            wrong.append(
                f"the text column {o['container']} spans x={o['container_left']}..{o['container_right']}"
                f" in a {vw} px viewport"
            )
        if wrong:
            culprits = "; sticking out: " + ", ".join(o["offenders"]) if o["offenders"] else ""
            failures.append(f"{path}: " + "; ".join(wrong) + culprits)
    report(failures, "pages overflow a 390 px phone screen")


# --------------------------------------------------------------------------- features a reader expects


def test_search_finds_a_term_of_the_book(site):
    search = site.search
    assert search["finished"], f"search.html?q={SEARCH_TERM} never finished: {search['summary']!r}"
    assert search["hits"], (
        f"search.html?q={SEARCH_TERM} found nothing ({search['summary']!r}), "
        f"though the book is about {SEARCH_TERM}"
    )
    for hit in search["hits"]:
        target = site_path(site.base + hit, site.base)
        assert target and (SITE_DIR / target).is_file(), f"search result {hit} is not a page of the site"


def test_notebook_pages_launch_in_colab_and_offer_the_notebook(site):
    assert NOTEBOOK_PAGES, "no notebook pages in _toc.yml"
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    url, branch = course.read_repository(ROOT)
    book_path = (config.get("repository") or {}).get("path_to_book") or ""
    failures = []
    for path, notebook in NOTEBOOK_PAGES.items():
        page = site.pages.get(path)
        if page is None:
            failures.append(f"{path}: not reached from the landing page")
            continue
        repo_path = posixpath.join(book_path, notebook) if book_path else notebook
        expected = course.colab_url(url, branch, repo_path)
        colab = [a["href"] for a in page.desktop["launch"] if "colab.research.google.com" in a["href"]]
        if not colab:
            failures.append(f"{path}: no 'launch in Colab' link (launch menu: {page.desktop['launch']})")
        elif colab[0] != expected:
            failures.append(f"{path}: Colab link {colab[0]} should be {expected}")
        elif not page.launch_menu_shows_colab:
            failures.append(f"{path}: clicking the launch button does not show the Colab link")
        if not (ROOT / notebook).is_file():
            failures.append(f"{path}: the Colab link's notebook {notebook} is not in the repository")
        downloads = [site_path(d, site.base) for d in page.desktop["downloads"]]
        ipynb = [d for d in downloads if d and d.endswith(".ipynb")]
        if not ipynb:
            failures.append(f"{path}: the download menu offers no .ipynb (it offers {downloads})")
            continue
        if ipynb[0] != f"_sources/{notebook}":
            failures.append(f"{path}: the .ipynb download is {ipynb[0]}, expected _sources/{notebook}")
        served = SITE_DIR / ipynb[0]
        try:
            cells = json.loads(served.read_text(encoding="utf-8"))["cells"]
        except (OSError, ValueError, KeyError) as exc:
            failures.append(f"{path}: the .ipynb download {ipynb[0]} is not a notebook ({exc})")
        else:
            if not cells:
                failures.append(f"{path}: the .ipynb download {ipynb[0]} has no cells")
    report(failures, "notebook pages without a working Colab link or .ipynb download")


def test_sidebar_numbers_chapters_and_sections(site):
    page = _page(site, "intro.html")
    entries = {site_path(a["href"], site.base): a["text"] for a in page.desktop["sidebar"]}
    failures = []
    for file, number in TOC[1:]:
        path = file + ".html"
        text = entries.get(path)
        if text is None:
            failures.append(f"{path}: not in the sidebar")
        elif number and not text.startswith(f"{number}. "):
            failures.append(f"{path}: sidebar reads {text!r}, expected it to start with '{number}. '")
        elif not number and re.match(r"\d+(\.\d+)*\. ", text):
            failures.append(f"{path}: sidebar reads {text!r}; appendices are not numbered")
    report(failures, "sidebar entries are missing or misnumbered")


def test_previous_and_next_links_follow_the_toc(site):
    failures = []
    for i, path in enumerate(TOC_PAGES):
        page = site.pages.get(path)
        if page is None:
            failures.append(f"{path}: not reached from the landing page")
            continue
        prev_expected = TOC_PAGES[i - 1] if i > 0 else None
        next_expected = TOC_PAGES[i + 1] if i + 1 < len(TOC_PAGES) else None
        prev = site_path(page.desktop["prev"], site.base) if page.desktop["prev"] else None
        nxt = site_path(page.desktop["next"], site.base) if page.desktop["next"] else None
        if prev != prev_expected:
            failures.append(f"{path}: 'previous' leads to {prev}, expected {prev_expected}")
        if nxt != next_expected:
            failures.append(f"{path}: 'next' leads to {nxt}, expected {next_expected}")
    report(failures, "previous/next links out of the toc's order")


def test_references_page_lists_the_bibliography(site):
    page = _page(site, "appendices/references.html")
    assert page.desktop["bibliography"] >= 1, (
        "appendices/references.html shows no bibliography entry (no [role=doc-biblioentry] or .citation)"
    )
