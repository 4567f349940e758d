"""The Colab edition as a reader sees it, in headless Chromium.

Three generated notebooks (``colab/``) are rendered as Jupyter renders them
(:func:`kt_helpers.editions.preview_html`: a CommonMark renderer for the
Markdown, maths kept apart and typeset by MathJax) with the book's vendored
MathJax (``_vendor/mathjax``, served from 127.0.0.1: no CDN), and opened in
the browser of ``tests/site_fixtures.py``. Each page: every formula typeset
without error, no TeX left in the text, each equation numbered with the
website's number, every solution's ``<details>`` closed until clicked, no
request outside the page's server. Screenshots of the pages go to
``_build/screenshots/colab/`` for review.

Needs Debian's ``chromium`` + ``chromium-driver``; skipped without them,
except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest

from kt_helpers import editions

try:  # tests/ on sys.path (rootdir-relative collection)
    from site_fixtures import CHROMEDRIVER, DESKTOP, SCREENSHOT_DIR, WAIT_FOR_PAGE_JS, SiteServer, screenshot, start_chrome
except ImportError:  # pragma: no cover - collected as tests.test_editions_browser
    from .site_fixtures import CHROMEDRIVER, DESKTOP, SCREENSHOT_DIR, WAIT_FOR_PAGE_JS, SiteServer, screenshot, start_chrome

ROOT = Path(__file__).resolve().parent.parent
PAGES = [
    "chapters/03_mathematics/02_fusion_outputs.ipynb",
    "chapters/01_background_and_concepts.ipynb",  # definitions: block quotes with maths
    "chapters/05_applications/03_new_models.ipynb",
]
#: The pages whose screenshots are kept for review.
SHOTS = PAGES[:2]

COLLECT_JS = r"""
const skip = "pre, code, script, style, mjx-container";
const raw = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const p = n.parentElement;
  if (!p || p.closest(skip)) continue;
  if (/\\\(|\\\)|\\\[|\\\]|\$\$|\\tag\{|\\begin\{/.test(n.textContent)) raw.push(n.textContent.trim().slice(0, 80));
}
const display = [...document.querySelectorAll('mjx-container[display="true"]')];
return {
  typeset: document.querySelectorAll("mjx-container").length,
  errors: [...document.querySelectorAll("mjx-merror")].map(e => e.getAttribute("data-mjx-error") || e.textContent),
  raw_tex: raw.slice(0, 20),
  // the equation numbers MathJax drew (its assistive MathML holds the tag's text)
  tags: display.map(c => (c.querySelector("mjx-assistive-mml mlabeledtr mtd") || {}).textContent || null)
    .filter(t => t),
  details: document.querySelectorAll("details").length,
  open_details: document.querySelectorAll("details[open]").length,
  requests: performance.getEntriesByType("resource").map(e => e.name),
};
"""

OPEN_FIRST_JS = r"""
const d = document.querySelector("details");
if (!d) return null;
d.querySelector("summary").click();
return d.open;
"""


def _why_not() -> str | None:
    if not (Path(CHROMEDRIVER).is_file() and os.access(CHROMEDRIVER, os.X_OK)):
        return f"No chromedriver at {CHROMEDRIVER}: apt-get install chromium chromium-driver (make browser-deps)."
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed in this environment (it is in requirements.txt)."
    return None


@pytest.fixture(scope="module")
def seen():
    """What the browser saw on each page, by the notebook's path."""
    why = _why_not()
    if why:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{why} The browser tests must run under CI.", pytrace=False)
        pytest.skip(why)
    folder = Path(tempfile.mkdtemp(prefix="kt-colab-pages-"))
    profile = tempfile.mkdtemp(prefix="kt-chromium-")
    shutil.copytree(ROOT / "_vendor" / "mathjax", folder / "mathjax")
    for rel in PAGES:
        nb = nbformat.read(ROOT / "colab" / rel, as_version=4)
        page = folder / (rel.replace("/", "__").removesuffix(".ipynb") + ".html")
        page.write_text(editions.preview_html(nb, "mathjax/tex-svg-full.js", title=rel), encoding="utf-8")
    server = SiteServer(folder)
    driver = None
    result = {}
    try:
        driver = start_chrome(profile)
        for rel in PAGES:
            name = rel.replace("/", "__").removesuffix(".ipynb")
            driver.get(f"{server.base}{name}.html")
            state = driver.execute_async_script(WAIT_FOR_PAGE_JS)
            record = driver.execute_script(COLLECT_JS)
            record["mathjax"] = state
            if rel in SHOTS:
                record["shots"] = [str(p) for p in screenshot(driver, SCREENSHOT_DIR / "colab" / f"{name}.png",
                                                              *DESKTOP, mobile=False)]
            record["opens_on_click"] = driver.execute_script(OPEN_FIRST_JS)
            record["base"] = server.base
            result[rel] = record
    finally:
        if driver is not None:
            driver.quit()
        server.close()
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    return result


def _tags_in_markdown(rel: str) -> list[str]:
    nb = nbformat.read(ROOT / "colab" / rel, as_version=4)
    return [t for c in nb.cells if c.cell_type == "markdown" for t in re.findall(r"\\tag\{([\d.]+)\}", c.source)]


@pytest.mark.parametrize("rel", PAGES)
def test_the_maths_is_typeset_and_numbered_as_on_the_website(seen, rel):
    page = seen[rel]
    assert page["mathjax"] == "typeset", f"{rel}: MathJax {page['mathjax']}"
    assert page["typeset"] > 0, f"{rel}: no formula typeset"
    assert not page["errors"], f"{rel}: MathJax errors {page['errors']}"
    assert not page["raw_tex"], f"{rel}: TeX left in the text: {page['raw_tex']}"
    expected = [f"({t})" for t in _tags_in_markdown(rel)]
    assert [t.strip() for t in page["tags"]] == expected, f"{rel}: equation numbers drawn {page['tags']}"


@pytest.mark.parametrize("rel", PAGES)
def test_solutions_are_collapsed_until_clicked(seen, rel):
    page = seen[rel]
    nb = nbformat.read(ROOT / "colab" / rel, as_version=4)
    n = sum(c.source.count("<details>") for c in nb.cells if c.cell_type == "markdown")
    assert n > 0, f"{rel}: no solution to check"
    assert page["details"] == n and page["open_details"] == 0, f"{rel}: {page['open_details']} of {page['details']} open"
    assert page["opens_on_click"] is True, f"{rel}: clicking a solution's summary does not open it"


@pytest.mark.parametrize("rel", PAGES)
def test_the_pages_load_nothing_from_outside(seen, rel):
    """MathJax comes from the page's own server; the one image from outside is the
    "Open in Colab" badge, which is Colab's (Jupyter fetches it from there too)."""
    badge = "https://colab.research.google.com/assets/colab-badge.svg"
    outside = [u for u in seen[rel]["requests"]
               if not u.startswith(seen[rel]["base"]) and not u.startswith("data:") and u != badge]
    assert not outside, f"{rel}: requests outside the local server: {outside}"
    assert any(u.startswith(seen[rel]["base"]) and u.endswith("mathjax/tex-svg-full.js") for u in seen[rel]["requests"])


def test_screenshots_of_two_pages_are_kept_for_review(seen):
    shots = [Path(p) for rel in SHOTS for p in seen[rel]["shots"]]
    assert len(shots) >= 2 and all(p.is_file() and p.stat().st_size > 10_000 for p in shots), shots
