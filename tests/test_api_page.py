"""The API appendix documents the whole public contract of kt_helpers."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
API_PAGE = ROOT / "appendices" / "api.md"
API_HTML = ROOT / "_build" / "html" / "appendices" / "api.html"
MODULES = sorted(
    [p.stem for p in (ROOT / "kt_helpers").glob("*.py") if not p.stem.startswith("_")]
    + [p.parent.name for p in (ROOT / "kt_helpers").glob("*/__init__.py")]  # subpackages (checks)
)


def _extension():
    spec = importlib.util.spec_from_file_location("book_config", ROOT / "_ext" / "book_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_public_module_is_on_the_api_page():
    text = API_PAGE.read_text()
    documented = set(re.findall(r"^\.\. automodule:: kt_helpers\.(\w+)\n   :members:", text, flags=re.M))
    assert documented == set(MODULES), (
        f"appendices/api.md must document every module of kt_helpers with :members:; "
        f"missing {sorted(set(MODULES) - documented)}, unknown {sorted(documented - set(MODULES))}"
    )


def test_the_api_page_is_in_the_table_of_contents():
    assert "- file: appendices/api\n" in (ROOT / "_toc.yml").read_text()


@pytest.mark.skipif(not API_HTML.is_file(), reason="the site has not been built (make build)")
@pytest.mark.parametrize("name", MODULES)
def test_every_exported_name_has_an_entry_on_the_built_page(name):
    html = API_HTML.read_text()
    module = importlib.import_module(f"kt_helpers.{name}")
    missing = [n for n in module.__all__ if f'id="kt_helpers.{name}.{n}"' not in html]
    assert not missing, f"kt_helpers.{name}: {missing} are exported but have no entry on the API page"


@pytest.mark.parametrize(
    ("module", "target", "ours"),
    [
        ("kt_helpers.fusion", "kt_helpers.fusion.kd_loss", True),
        ("kt_helpers.train", "MAX_THREADS", True),  # a documented constant of ours
        ("kt_helpers.fusion", "Tensor", False),  # torch's, imported into the module
        ("kt_helpers.train", "Callable", False),  # typing's
        ("kt_helpers.extraction", "torch.nn.Module", False),
        (None, "pandas.DataFrame", False),
    ],
)
def test_only_names_outside_kt_helpers_are_shown_as_plain_code(module, target, ours):
    # References to kt_helpers must resolve (the nitpicky build fails otherwise);
    # the others cannot be linked offline and are shown as code.
    assert _extension()._is_kt_helpers_object(module, target) is ours
