# Two commands for a new user (see README.md):
#   make book   set everything up, build the site from the stored outputs, open it
#   make test   set everything up, then run every test (CI runs exactly this)
# Everything installs into .venv; nothing is installed system-wide except, for
# the browser tests, Debian's chromium and chromium-driver when running as root.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HTML   := _build/html

.PHONY: setup book build build-en build-zh translations open serve test test-claims execute browser-deps colab student book-no-solutions assignments clean help

help:
	@echo "make book      build the book into $(HTML) (English) and $(HTML)/zh_CN (Chinese) and open it"
	@echo "make translations  extract the English messages and update the Chinese catalogues in locales/zh_CN"
	@echo "make test      run every test (unit, doctests, notebooks under nbval, build, browser)"
	@echo "make test-claims  re-execute every notebook and check the prose's claims (no digits compared),"
	@echo "                  with the pinned kernels and with PyTorch's generic ones"
	@echo "make execute   re-execute every notebook and store its outputs"
	@echo "make serve     serve the built site on http://localhost:8000"
	@echo "make colab     regenerate the Colab edition in colab/ (commit it with the notebooks)"
	@echo "make student   write student notebooks (no solutions, answer cells) to student/"
	@echo "make book-no-solutions   build the site without solutions into _build/no-solutions"
	@echo "make assignments  build the graded assignments (otter-grader) into assignments/dist/"

$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

setup: $(STAMP)

build: build-en build-zh

build-en: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

# The Chinese edition: the same sources, with the messages of
# locales/zh_CN/LC_MESSAGES/<page>.po (untranslated ones stay in English),
# built into $(HTML)/zh_CN/ next to the English site (see CONTRIBUTING.md).
build-zh: $(STAMP)
	$(PY) scripts/translations.py config _build/zh_CN/_config.yml
	$(VENV)/bin/jupyter-book build . --config _build/zh_CN/_config.yml --path-output _build/zh_CN -W -n --keep-going
	rm -rf $(HTML)/zh_CN
	mkdir -p $(HTML)
	cp -r _build/zh_CN/_build/html $(HTML)/zh_CN

# After an English change: new messages are added to the catalogues, changed
# ones marked fuzzy; then translate them (tests/test_translations.py says where).
translations: $(STAMP)
	$(PY) scripts/translations.py update

open:
	@echo "The book is at file://$(CURDIR)/$(HTML)/index.html"
	-@$(PY) -m webbrowser -t "file://$(CURDIR)/$(HTML)/index.html" >/dev/null 2>&1

book: build open

serve: $(STAMP)
	$(PY) -m http.server --directory $(HTML) 8000

execute: $(STAMP)
	$(PY) scripts/execute_notebooks.py

# The Colab edition: every notebook with its MyST markup rendered for Jupyter and
# Colab, committed under colab/ (badges and launch buttons open it). A test fails
# when it is stale.
colab: $(STAMP)
	rm -rf colab
	$(PY) -m kt_helpers.course colab colab

student: $(STAMP)
	rm -rf student
	$(PY) -m kt_helpers.course student student

# The site without solutions (exercises only), for students: _build/no-solutions/_build/html
book-no-solutions: $(STAMP)
	$(PY) -m kt_helpers.course no-solutions-config _build/no_solutions_config.yml
	$(VENV)/bin/jupyter-book build . --config _build/no_solutions_config.yml --path-output _build/no-solutions -W -n --keep-going

# The graded assignments: otter assign on each master in assignments/src, into
# assignments/dist/<name>/{autograder,student} (not committed: the autograder folder
# holds the solutions and hidden tests; publish the student notebooks).
assignments: $(STAMP)
	$(PY) scripts/build_assignments.py

# Browser tests need Debian's chromium and chromium-driver (and a Chinese font,
# for the Chinese site). Installed here when
# missing and possible (root with apt-get); otherwise the browser tests are
# skipped with a message, except under CI, where they must run.
browser-deps:
	@if [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing chromium and chromium-driver for the browser tests..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "chromium-driver is missing and cannot be installed here: browser tests will be skipped."; \
	  fi; \
	fi
	@# A Chinese font, for the Chinese site's pages and screenshots (tests/test_site_zh.py).
	@if command -v fc-list >/dev/null && [ -z "$$(fc-list :lang=zh)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing a Chinese font (fonts-wqy-microhei) for the browser tests..."; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei >/dev/null; \
	  else \
	    echo "No Chinese font: install fonts-wqy-microhei (or fonts-noto-cjk), or the Chinese browser tests fail."; \
	  fi; \
	fi

test: $(STAMP) browser-deps build
	$(PY) -m pytest tests kt_helpers chapters appendices --nbval \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider --durations=30

# The claims the prose makes about results, checked without comparing digits: what must
# hold on any machine (Apple silicon, a GPU, another torch). Twice: with the book's pinned
# CPU kernels, and with PyTorch's generic ones (another order of additions).
test-claims: $(STAMP)
	$(PY) scripts/check_claims.py --kernels pinned
	$(PY) scripts/check_claims.py --kernels default

clean:
	rm -rf _build student assignments/dist
