"""Serve the built website and read every page of it in headless Chromium.

Used by ``tests/test_site.py``. One crawl reads every page reachable from the
landing page twice — at desktop width (1280 px) and at phone width (390 px) —
records what a reader's browser saw (requests, console errors, typeset maths,
images, links, navigation, overflow) and saves a screenshot of each. The tests
then judge these records, so each check reports every failing page at once.

Environment variables:

``KT_SITE_DIR``        the built site (default ``_build/html``)
``KT_SCREENSHOT_DIR``  where screenshots go (default ``_build/screenshots``)
``KT_CHROMEDRIVER``    the driver (default ``/usr/bin/chromedriver``)
``CI``                 when set, a missing site or browser fails instead of skipping
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import posixpath
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urldefrag

ROOT = Path(__file__).resolve().parent.parent
SITE_DIR = Path(os.environ.get("KT_SITE_DIR", ROOT / "_build" / "html")).resolve()
SCREENSHOT_DIR = Path(os.environ.get("KT_SCREENSHOT_DIR", ROOT / "_build" / "screenshots")).resolve()
CHROMEDRIVER = os.environ.get("KT_CHROMEDRIVER", "/usr/bin/chromedriver")

#: A term the book uses on several pages; the search page must find it.
SEARCH_TERM = "distillation"
#: The Chinese edition, built into this folder of the site (``make build-zh``);
#: the English crawl leaves it to ``tests/test_site_zh.py``.
ZH_PREFIX = "zh_CN/"
ZH_SEARCH_TERM = "知识迁移"
ZH_SCREENSHOT_DIR = SCREENSHOT_DIR / "zh_CN"
DESKTOP = (1280, 900)
PHONE = (390, 844)
#: Full-page screenshots longer than this are cut into parts (Chromium captures
#: at most about 16k px at once).
MAX_SHOT_HEIGHT = 12000

CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    # Containers often have a tiny /dev/shm; Chromium then crashes on big pages.
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


# --------------------------------------------------------------------------- server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A browser that moves on to the next page drops its open connections;
        # that is not an error of the site.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class SiteServer:
    """The built site over HTTP on 127.0.0.1, on a free port, from a background thread."""

    def __init__(self, directory: Path):
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------- browser


def start_chrome(user_data_dir: str):
    """Headless Chromium with the performance and browser logs switched on."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    return driver


def set_viewport(driver, width: int, height: int, mobile: bool) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


def screenshot(driver, path: Path, width: int, height: int, mobile: bool) -> list[Path]:
    """Full-page PNGs, then back to a ``width`` x ``height`` screen; return the files.

    The screen is made as tall as the page for the shot (Chromium's own
    beyond-the-viewport capture lays out the theme's sticky sidebars wrongly).
    A page taller than MAX_SHOT_HEIGHT is cut into parts: ``name.png``,
    ``name.part2.png``, ...
    """
    import base64

    full = driver.execute_script(
        "return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)"
    )
    files = []
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        top, part = 0, 1
        while top < max(full, 1):
            tall = max(min(full - top, MAX_SHOT_HEIGHT), height if top == 0 else 1)
            set_viewport(driver, width, tall, mobile)
            driver.execute_script("window.scrollTo(0, arguments[0])", top)
            driver.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "requestAnimationFrame(() => requestAnimationFrame(() => done()));"
            )
            data = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "optimizeForSpeed": True})["data"]
            file = path if part == 1 else path.with_name(f"{path.stem}.part{part}.png")
            file.write_bytes(base64.b64decode(data))
            files.append(file)
            top += tall
            part += 1
    finally:
        set_viewport(driver, width, height, mobile)
        driver.execute_script("window.scrollTo(0, 0)")
    return files


# JavaScript run in the page. Each returns plain JSON.

WAIT_FOR_PAGE_JS = r"""
const done = arguments[arguments.length - 1];
const deadline = Date.now() + 30000;
const usesMathJax = [...document.scripts].some(s => /mathjax/i.test(s.src || ""));
function finish(state) {
  // Lazy images would stay unloaded in a page nobody scrolls: load them now.
  document.querySelectorAll('img[loading="lazy"]').forEach(i => { i.loading = "eager"; });
  const waitImages = () => {
    const pending = [...document.images].filter(i => !i.complete);
    if (pending.length && Date.now() < deadline) { setTimeout(waitImages, 50); return; }
    (document.fonts ? document.fonts.ready : Promise.resolve()).then(() => done(state));
  };
  waitImages();
}
function poll() {
  if (!usesMathJax) { finish("no-mathjax"); return; }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(() => finish("typeset"), e => finish("mathjax-error: " + e));
    return;
  }
  if (Date.now() > deadline) { finish("mathjax-never-started"); return; }
  setTimeout(poll, 50);
}
poll();
"""

COLLECT_JS = r"""
const snip = (s, n = 90) => (s || "").replace(/\s+/g, " ").trim().slice(0, n);
const describe = el => {
  let d = el.tagName.toLowerCase();
  if (el.id) d += "#" + el.id;
  if (typeof el.className === "string" && el.className.trim())
    d += "." + el.className.trim().split(/\s+/).slice(0, 3).join(".");
  return d;
};
const out = {url: location.href, title: document.title};
const article = document.querySelector("article.bd-article") || document.querySelector("main") || document.body;

// Maths: every .math element typeset, no TeX left anywhere in the text.
const math = [...document.querySelectorAll(".math")];
out.math_count = math.length;
out.mjx_count = document.querySelectorAll("mjx-container").length;
const rawTex = /\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{/;
out.raw_math = math.filter(el => {
  const c = el.cloneNode(true);
  c.querySelectorAll("mjx-container, .eqno, .headerlink").forEach(x => x.remove());
  return rawTex.test(c.textContent);
}).map(el => describe(el) + ": " + snip(el.textContent));
out.math_errors = [...document.querySelectorAll("mjx-merror")].map(
  el => snip(el.getAttribute("data-mjx-error") || el.textContent));
const rawInText = [];
const skip = "pre, code, script, style, textarea, mjx-container, .math, .highlight, kbd";
const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
const dollarTex = /\$[^$\n]{0,80}?[\\^_][^$\n]{0,80}?\$/;
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const p = n.parentElement;
  if (!p || p.closest(skip)) continue;
  const t = n.textContent;
  if (rawTex.test(t) || dollarTex.test(t)) rawInText.push(describe(p) + ": " + snip(t));
}
out.raw_tex_in_text = rawInText.slice(0, 20);

// Equation numbers of labelled equations, and the text of references to them.
out.equations = [...document.querySelectorAll('[id^="equation-"]')].map(el => {
  const no = el.querySelector(".eqno");
  return {id: el.id, eqno: no ? snip(no.textContent.replace(/[#¶]/g, "")) : null};
});
out.eq_refs = [...article.querySelectorAll('a[href*="#equation-"]')]
  .filter(a => !a.classList.contains("headerlink"))
  .map(a => ({href: a.getAttribute("href"), text: snip(a.textContent)}));

// Images.
out.images = document.images.length;
out.broken_images = [...document.images]
  .filter(i => !(i.complete && i.naturalWidth > 0))
  .map(i => (i.getAttribute("src") || "").slice(0, 120) + (i.alt ? " (alt: " + snip(i.alt, 40) + ")" : ""));

// Widgets: a widget view without a manager renders as nothing.
const widgetMime = "application/vnd.jupyter.widget-view+json";
const emptyWidgets = [];
document.querySelectorAll('script[type="' + widgetMime + '"]').forEach(s =>
  emptyWidgets.push("widget view " + snip(s.textContent, 60) + " in " + describe(s.parentElement)));
document.querySelectorAll('.jupyter-widgets, .widget-area, [data-mime-type="' + widgetMime + '"]').forEach(el => {
  const r = el.getBoundingClientRect();
  const content = el.innerText.trim() || el.querySelector("img, svg, canvas, video, iframe");
  if (!content || r.height < 2) emptyWidgets.push(describe(el) + " is empty");
});
const reprs = /^(interactive|HBox|VBox|Box|Tab|Accordion|GridBox|Output|[A-Z][A-Za-z]*(Slider|Dropdown|Text|Button|Checkbox|ToggleButtons|RadioButtons|Select))\(/;
document.querySelectorAll(".cell_output pre, .output pre").forEach(pre => {
  if (reprs.test(pre.textContent.trim()))
    emptyWidgets.push("a widget's text repr shows instead of a figure: " + snip(pre.textContent, 60));
});
out.empty_widgets = emptyWidgets;

// Links and anchors.
out.links = [...document.querySelectorAll("a[href]")].map(a => ({
  href: a.href, raw: a.getAttribute("href"), text: snip(a.textContent, 50) || describe(a)}));
// Text left for the author, not the reader: a paragraph that is only a
// PLACEHOLDER_NAME, or TODO / FIXME / "Placeholder" in the prose.
const placeholders = [];
article.querySelectorAll("p, li, figcaption, td, dd, dt").forEach(el => {
  if (el.closest("pre, code, .highlight, .cell_output")) return;
  const c = el.cloneNode(true);
  c.querySelectorAll("code, pre, mjx-container, .math").forEach(x => x.remove());
  const t = c.textContent.replace(/\s+/g, " ").trim();
  if (/^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$/.test(t) || /\b(TODO|FIXME|TBD|XXX)\b|^Placeholder\.?$/.test(t))
    placeholders.push(describe(el) + ": " + snip(t));
});
out.placeholders = placeholders;

// A cross-reference Sphinx could not resolve stays as its target's name, not a link.
out.unresolved = [...article.querySelectorAll(".xref")].filter(el => !el.closest("a"))
  .map(el => snip(el.textContent, 60));
out.ids = [...document.querySelectorAll("[id]")].map(e => e.id)
  .concat([...document.querySelectorAll("a[name]")].map(a => a.getAttribute("name")));

// Navigation.
out.sidebar = [...document.querySelectorAll("nav.bd-docs-nav a.reference")].map(a => ({
  href: a.href, text: snip(a.textContent, 120)}));
const prev = document.querySelector(".prev-next-area a.left-prev");
const next = document.querySelector(".prev-next-area a.right-next");
out.prev = prev ? prev.href : null;
out.next = next ? next.href : null;
out.downloads = [...document.querySelectorAll(".dropdown-download-buttons a")].map(a => a.href);
out.launch = [...document.querySelectorAll(".dropdown-launch-buttons a")].map(a => ({
  href: a.href, title: a.getAttribute("title") || a.getAttribute("data-bs-original-title") || snip(a.textContent)}));
out.bibliography = document.querySelectorAll('[role="doc-biblioentry"], .citation').length;
out.h1 = snip((article.querySelector("h1") || {}).textContent || "");
return out;
"""

OVERFLOW_JS = r"""
// The phone's width. Not window.innerWidth: a phone browser zooms out to show a
// page that is too wide, and innerWidth then grows with the page.
const vw = arguments[0];
const describe = el => {
  let d = el.tagName.toLowerCase();
  if (el.id) d += "#" + el.id;
  if (typeof el.className === "string" && el.className.trim())
    d += "." + el.className.trim().split(/\s+/).slice(0, 3).join(".");
  const t = (el.textContent || "").replace(/\s+/g, " ").trim().slice(0, 50);
  return d + (t ? ' "' + t + '"' : "");
};
const container = document.querySelector(".bd-article-container")
  || document.querySelector("article.bd-article") || document.querySelector("main");
const crect = container ? container.getBoundingClientRect() : null;
// Elements of the article that stick out of the screen without a scrolling box of
// their own around them (a wide table or code block in its own scroller is fine).
const scrolls = el => {
  for (let a = el.parentElement; a && a !== container; a = a.parentElement) {
    const ox = getComputedStyle(a).overflowX;
    if (ox === "auto" || ox === "scroll" || ox === "hidden" || ox === "clip") return true;
  }
  return false;
};
const offenders = [];
if (container) {
  for (const el of container.querySelectorAll("*")) {
    if (!el.getClientRects().length) continue;
    const r = el.getBoundingClientRect();
    if (r.right > vw + 1 && r.width > 0 && !scrolls(el)) {
      if (!offenders.some(o => o.el.contains(el)))
        offenders.push({el, right: Math.round(r.right)});
    }
    if (offenders.length >= 8) break;
  }
}
return {
  viewport: vw,
  inner_width: window.innerWidth,
  container_scroll_width: container ? container.scrollWidth : null,
  doc_scroll_width: document.documentElement.scrollWidth,
  body_scroll_width: document.body.scrollWidth,
  container: container ? describe(container).split(" ")[0] : null,
  container_left: crect ? Math.round(crect.left) : null,
  container_right: crect ? Math.round(crect.right) : null,
  container_width: crect ? Math.round(crect.width) : null,
  offenders: offenders.map(o => describe(o.el) + " reaches x=" + o.right),
};
"""

SEARCH_JS = r"""
const done = arguments[arguments.length - 1];
const deadline = Date.now() + 30000;
function poll() {
  const results = document.querySelector("#search-results");
  const summary = results && results.querySelector(".search-summary");
  const text = summary ? summary.textContent.trim() : "";
  const finished = text && !/preparing|searching|正在/i.test(text);  // 正在准备搜索, 正在搜索中 (zh_CN)
  if (finished || Date.now() > deadline) {
    done({
      finished: !!finished,
      summary: text,
      hits: results ? [...results.querySelectorAll("ul.search > li a")].map(a => a.getAttribute("href")) : [],
    });
    return;
  }
  setTimeout(poll, 100);
}
poll();
"""


# --------------------------------------------------------------------------- crawl


_SEEN_REQUESTS: dict[str, str] = {}


@dataclass
class Page:
    """What the browser saw on one page of the site."""

    path: str  # relative to the site root, e.g. "chapters/02_four_steps.html"
    desktop: dict = field(default_factory=dict)
    overflow: dict = field(default_factory=dict)
    requests: list = field(default_factory=list)  # URLs the page asked for, both widths
    failed: list = field(default_factory=list)  # (url, status or error) of failed site requests
    console: list = field(default_factory=list)  # SEVERE browser log messages, both widths
    mathjax: str = ""
    launch_menu_shows_colab: bool | None = None


@dataclass
class Crawl:
    base: str
    pages: dict  # path -> Page
    redirects: dict  # path -> what happened on a page that only redirects (index.html)
    search: dict
    seconds: float


def site_path(url: str, base: str) -> str | None:
    """The site path of an URL on the site ("" for the root), or None for other URLs."""
    url = urldefrag(url)[0].split("?", 1)[0]
    if not url.startswith(base):
        return None
    path = unquote(url[len(base):])
    if path == "" or path.endswith("/"):
        path += "index.html"
    return path


def redirect_target(path: str) -> str | None:
    """Where a meta-refresh page sends the reader, as a site path, or None."""
    import re

    file = SITE_DIR / path
    if not file.is_file():
        return None
    match = re.search(
        r'<meta[^>]+http-equiv="refresh"[^>]+content="\d+;\s*url=([^"]+)"',
        file.read_text(encoding="utf-8", errors="replace"),
        re.IGNORECASE,
    )
    if not match:
        return None
    target = urldefrag(match.group(1))[0]
    return posixpath.normpath(posixpath.join(posixpath.dirname(path), target)) if target else None


#: Documents of Chromium itself (its new-tab page), whose requests are not the site's.
_BROWSER_PAGES = ("chrome:", "chrome-search:", "chrome-untrusted:", "devtools:")


def _drain(driver, page: Page | None, base: str, seen: dict[str, str] | None = None) -> None:
    """Move the browser's pending performance and console log entries onto ``page``.

    ``seen`` maps request ids to URLs across calls, so that a request that
    fails after the page that made it was drained is still named.
    """
    seen = _SEEN_REQUESTS if seen is None else seen
    perf = driver.get_log("performance")
    console = driver.get_log("browser")
    for entry in perf:
        message = json.loads(entry["message"])["message"]
        method, params = message.get("method"), message.get("params", {})
        request_id = params.get("requestId")
        if method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if params.get("documentURL", "").startswith(_BROWSER_PAGES) and not url.startswith(base):
                seen[request_id] = ""  # Chromium's own page: not the site's business
                continue
            seen[request_id] = url
            if page is not None:
                page.requests.append(url)
        elif page is None:
            continue
        elif method == "Network.responseReceived":
            response = params["response"]
            if response["url"].startswith(base) and response["status"] >= 400:
                page.failed.append((response["url"], f"HTTP {response['status']}"))
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            url = seen.get(request_id)
            if url:  # unknown ids were sent before the crawl began, by Chromium itself
                page.failed.append((url, params.get("errorText", "failed")))
    if page is None:
        return
    for entry in console:
        if entry.get("level") == "SEVERE":
            page.console.append(entry["message"].replace(base, "/"))


def crawl(
    driver,
    base: str,
    *,
    prefix: str = "",
    exclude: tuple[str, ...] = (ZH_PREFIX,),
    search_term: str = SEARCH_TERM,
    screenshot_dir: Path | None = None,
) -> Crawl:
    """Read every page reachable from the landing page at both widths, with screenshots.

    ``prefix`` is the folder of the site to read (``""`` for the English site,
    ``zh_CN/`` for the Chinese one, whose landing page is ``zh_CN/index.html``);
    pages outside it, or under ``exclude``, are linked to but not read.
    """
    from urllib.parse import quote

    screenshot_dir = SCREENSHOT_DIR if screenshot_dir is None else screenshot_dir
    start = time.perf_counter()
    for width in ("desktop", "phone"):
        folder = screenshot_dir / width
        if folder.is_dir():
            for old in folder.glob("*.png"):
                old.unlink()

    pages: dict[str, Page] = {}
    redirects: dict[str, dict] = {}
    queue = [prefix + "index.html"]
    seen = set(queue)
    _SEEN_REQUESTS.clear()
    driver.get("about:blank")  # leave the new-tab page, whose requests are Chromium's own
    time.sleep(0.5)
    _drain(driver, None, base)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    set_viewport(driver, *DESKTOP, mobile=False)
    while queue:
        path = queue.pop(0)
        target = redirect_target(path)
        found = [target] if target else []
        if target:
            # A reader arriving here is sent on: check that the browser lands there.
            probe = Page(path)
            driver.get(base + path)
            landed = _wait_for_url(driver, base + target)
            _drain(driver, probe, base)
            redirects[path] = {
                "target": target,
                "landed": site_path(landed, base),
                "requests": probe.requests,
                "failed": probe.failed,
                "console": probe.console,
            }
        else:
            page = pages[path] = Page(path)
            driver.get(base + path)
            page.mathjax = driver.execute_async_script(WAIT_FOR_PAGE_JS)
            page.desktop = driver.execute_script(COLLECT_JS)
            shot = path.removeprefix(prefix).removesuffix(".html").replace("/", "__") + ".png"
            screenshot(driver, screenshot_dir / "desktop" / shot, *DESKTOP, mobile=False)
            if page.desktop["launch"]:
                page.launch_menu_shows_colab = _launch_menu_shows_colab(driver)
            _drain(driver, page, base)
            found = [site_path(link["href"], base) for link in page.desktop["links"]]
        for new in found:
            if not new or not new.startswith(prefix) or any(new.startswith(e) for e in exclude if e != prefix):
                continue
            if new.endswith(".html") and new not in seen and (SITE_DIR / new).is_file():
                seen.add(new)
                queue.append(new)

    set_viewport(driver, *PHONE, mobile=True)
    for path, page in pages.items():
        driver.get(base + path)
        driver.execute_async_script(WAIT_FOR_PAGE_JS)
        page.overflow = driver.execute_script(OVERFLOW_JS, PHONE[0])
        shot = path.removeprefix(prefix).removesuffix(".html").replace("/", "__") + ".png"
        screenshot(driver, screenshot_dir / "phone" / shot, *PHONE, mobile=True)
        _drain(driver, page, base)

    set_viewport(driver, *DESKTOP, mobile=False)
    driver.get(f"{base}{prefix}search.html?q={quote(search_term)}")
    search = driver.execute_async_script(SEARCH_JS)
    probe = Page(f"{prefix}search.html?q={search_term}")
    _drain(driver, probe, base)
    search.update(console=probe.console, requests=probe.requests, failed=probe.failed)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return Crawl(base, pages, redirects, search, time.perf_counter() - start)


def _wait_for_url(driver, url: str, timeout: float = 10) -> str:
    """Wait until the browser shows ``url`` (after a redirect); return where it is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = driver.current_url
        if urldefrag(current)[0] == url and driver.execute_script("return document.readyState") == "complete":
            break
        time.sleep(0.05)
    time.sleep(0.3)  # let the landing page's own requests show in the log
    return driver.current_url


def _launch_menu_shows_colab(driver) -> bool:
    """Open the page's launch menu (the rocket) and see whether the Colab link shows."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        button = driver.find_element(By.CSS_SELECTOR, ".dropdown-launch-buttons button.dropdown-toggle")
        button.click()
        link = driver.find_element(By.CSS_SELECTOR, '.dropdown-launch-buttons a[href*="colab.research.google.com"]')
        shown = WebDriverWait(driver, 5).until(lambda d: link.is_displayed())
        button.click()
        return bool(shown)
    except WebDriverException:
        return False


# --------------------------------------------------------------------------- setup


def free_port_available() -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 0))
        except OSError:
            return False
    return True


def missing_prerequisite() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not (SITE_DIR / "index.html").is_file():
        return (
            f"No built site at {SITE_DIR} (no index.html): build it with `make build` "
            "or point KT_SITE_DIR at a built site."
        )
    if not (Path(CHROMEDRIVER).is_file() and os.access(CHROMEDRIVER, os.X_OK)):
        return (
            f"No chromedriver at {CHROMEDRIVER}: install Debian's chromium and chromium-driver "
            "(`make browser-deps` as root, or apt-get install chromium chromium-driver)."
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed in this environment (it is in requirements.txt)."
    if not free_port_available():
        return "Cannot open a local port on 127.0.0.1 to serve the site."
    return None


def run_crawl(**options) -> Crawl:
    """Serve the site, start the browser, crawl (``options`` go to :func:`crawl`), and clean up."""
    server = SiteServer(SITE_DIR)
    profile = tempfile.mkdtemp(prefix="kt-chromium-")
    driver = None
    try:
        driver = start_chrome(profile)
        return crawl(driver, server.base, **options)
    finally:
        if driver is not None:
            driver.quit()
        server.close()
        shutil.rmtree(profile, ignore_errors=True)
