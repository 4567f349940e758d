"""The instructors' list of exercises (course/exercises.yml) against the book.

The list must hold every exercise label of the book exactly once, on the page
that defines it, with a valid kind, time, difficulty and assignment; and where
the graded assignments are present, the questions it names must exist and cite
the exercise, and every question that cites an exercise must be named.
The last tests feed the checker broken lists, so that it is seen to fail.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
KIT = ROOT / "course" / "exercises.yml"
ASSIGNMENTS = ROOT / "assignments" / "src"

KINDS = {"derivation", "coding", "experiment", "reading"}
FIELDS = {"label", "page", "kind", "minutes", "difficulty", "assignment", "questions"}
LABEL = re.compile(r"^[ \t]*:label:[ \t]*(ex-[\w-]+)[ \t]*$", flags=re.M)
QUESTION = re.compile(r"#\s*BEGIN QUESTION\s*\n\s*name:\s*(\S+)")


def _page_text(path: Path) -> str:
    """The Markdown of a page: a Markdown file, or a notebook's Markdown cells."""
    if path.suffix == ".md":
        return path.read_text(encoding="utf-8")
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def book_labels(root: Path = ROOT) -> dict[str, list[str]]:
    """Every exercise label of the book's pages -> the pages (relative paths) that define it."""
    found: dict[str, list[str]] = {}
    for folder in ("chapters", "appendices"):
        for path in sorted((root / folder).rglob("*")):
            if path.suffix not in {".md", ".ipynb"} or ".ipynb_checkpoints" in path.parts:
                continue
            for label in LABEL.findall(_page_text(path)):
                found.setdefault(label, []).append(path.relative_to(root).as_posix())
    return found


def assignment_questions(root: Path = ROOT) -> dict[str, dict[str, set[str]]]:
    """assignment name -> question name -> the exercise labels its cells cite (otter-assign masters)."""
    out: dict[str, dict[str, set[str]]] = {}
    for path in sorted((root / "assignments" / "src").glob("*.ipynb")):
        questions: dict[str, set[str]] = {}
        current = None
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            source = "".join(cell["source"])
            match = QUESTION.search(source)
            if match:
                current = match.group(1)
                questions[current] = set()
            if current is not None:
                questions[current] |= set(re.findall(r"ex-ch\d+[\w-]*[a-z0-9]", source))
        out[path.stem] = questions
    return out


def problems(kit: dict, labels: dict[str, list[str]],
             assignments: dict[str, dict[str, set[str]]] | None = None) -> list[str]:
    """Everything wrong with the list ``kit`` (the parsed YAML), as messages; [] if nothing."""
    found: list[str] = []
    entries = kit.get("exercises") if isinstance(kit, dict) else None
    if not isinstance(entries, list):
        return ["course/exercises.yml must hold a list under 'exercises'"]
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        where = f"entry {i}"
        if not isinstance(entry, dict):
            found.append(f"{where} is not a mapping")
            continue
        label = entry.get("label")
        where = f"{label!r}" if isinstance(label, str) else where
        missing, unknown = FIELDS - entry.keys(), entry.keys() - FIELDS
        if missing:
            found.append(f"{where}: missing field(s) {sorted(missing)}")
        if unknown:
            found.append(f"{where}: unknown field(s) {sorted(unknown)}")
        if not isinstance(label, str):
            continue
        seen[label] = seen.get(label, 0) + 1
        if label not in labels:
            found.append(f"{where}: no exercise of the book has this label")
        elif entry.get("page") not in labels[label]:
            found.append(f"{where}: page {entry.get('page')!r}, but the label is on {labels[label]}")
        if entry.get("kind") not in KINDS:
            found.append(f"{where}: kind must be one of {sorted(KINDS)}, got {entry.get('kind')!r}")
        minutes = entry.get("minutes")
        if type(minutes) is not int or not 5 <= minutes <= 240:
            found.append(f"{where}: minutes must be a whole number from 5 to 240, got {minutes!r}")
        if entry.get("difficulty") not in (1, 2, 3) or type(entry.get("difficulty")) is not int:
            found.append(f"{where}: difficulty must be 1, 2 or 3, got {entry.get('difficulty')!r}")
        assignment, questions = entry.get("assignment"), entry.get("questions")
        chapter = re.match(r"ex-ch(\d+)-", label)
        if chapter:
            if not isinstance(assignment, str) or not re.fullmatch(rf"ch{int(chapter.group(1)):02d}_[a-z0-9_]+", assignment):
                found.append(f"{where}: assignment must be chapter {chapter.group(1)}'s (ch{int(chapter.group(1)):02d}_<topic>), "
                             f"got {assignment!r}")
        elif assignment is not None:
            found.append(f"{where}: an appendix exercise has no assignment, got {assignment!r}")
        if not isinstance(questions, list) or not all(isinstance(q, str) and re.fullmatch(r"q\d+", q) for q in questions):
            found.append(f"{where}: questions must be a list like [q1, q2], got {questions!r}")
            continue
        if assignments is not None and isinstance(assignment, str):
            if assignment not in assignments:
                found.append(f"{where}: assignment {assignment!r} has no master in assignments/src")
                continue
            for q in questions:
                if q not in assignments[assignment]:
                    found.append(f"{where}: {assignment} has no question {q}")
                elif label not in assignments[assignment][q]:
                    found.append(f"{where}: {assignment} {q} does not cite {label}")
    found += [f"{label!r} is listed {n} times" for label, n in seen.items() if n > 1]
    found += [f"{label!r} ({pages[0]}) is missing from course/exercises.yml"
              for label, pages in labels.items() if label not in seen]
    found += [f"{label!r} is defined on more than one page: {pages}" for label, pages in labels.items() if len(pages) > 1]
    if assignments is not None:
        listed = {(e.get("assignment"), q, e.get("label")) for e in entries if isinstance(e, dict)
                  for q in (e.get("questions") or []) if isinstance(q, str)}
        for name, questions in assignments.items():
            for q, cited in questions.items():
                for label in cited & labels.keys():
                    if (name, q, label) not in listed:
                        found.append(f"{name} {q} cites {label!r}, but its entry does not list {q}")
    return found


@pytest.fixture(scope="module")
def kit():
    return yaml.safe_load(KIT.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def labels():
    return book_labels()


@pytest.fixture(scope="module")
def assignments():
    return assignment_questions() if ASSIGNMENTS.is_dir() else None


def test_the_book_has_exercises(labels):
    assert len(labels) >= 50, labels  # the pattern still finds them


def test_every_exercise_is_listed_once_with_valid_fields(kit, labels, assignments):
    assert problems(kit, labels, assignments) == []


def test_the_list_is_in_reading_order(kit):
    """Entries follow the table of contents, so the appendix's table reads like the book."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    order: list[str] = []

    def walk(entries):
        for entry in entries:
            order.append(entry["file"])
            walk(entry.get("sections", []))
    for part in toc["parts"]:
        walk(part["chapters"])
    pages = [Path(e["page"]).with_suffix("").as_posix() for e in kit["exercises"]]
    positions = [order.index(p) for p in pages]
    assert positions == sorted(positions), "course/exercises.yml is not in the order of _toc.yml"


@pytest.mark.skipif(not ASSIGNMENTS.is_dir(), reason="no assignments/src in this checkout")
def test_every_assignment_master_is_used(kit, assignments):
    named = {e["assignment"] for e in kit["exercises"] if e["assignment"]}
    assert named == set(assignments), (named, set(assignments))


# The checker fails on broken lists (a test must be able to fail).

def _broken(kit, change):
    out = copy.deepcopy(kit)
    change(out["exercises"])
    return out


@pytest.mark.parametrize("change, message", [
    (lambda e: e.pop(0), "is missing from course/exercises.yml"),
    (lambda e: e.append(dict(e[0], label="ex-ch1-no-such-exercise")), "no exercise of the book has this label"),
    (lambda e: e.append(copy.deepcopy(e[0])), "is listed 2 times"),
    (lambda e: e[0].pop("minutes"), "missing field(s) ['minutes']"),
    (lambda e: e[0].update(kind="homework"), "kind must be one of"),
    (lambda e: e[0].update(minutes=0), "minutes must be a whole number"),
    (lambda e: e[0].update(minutes="20"), "minutes must be a whole number"),
    (lambda e: e[0].update(difficulty=4), "difficulty must be 1, 2 or 3"),
    (lambda e: e[0].update(difficulty=True), "difficulty must be 1, 2 or 3"),
    (lambda e: e[0].update(assignment="ch02_four_steps"), "assignment must be chapter 1's"),
    (lambda e: e[0].update(page="chapters/02_four_steps.ipynb"), "but the label is on"),
    (lambda e: e[0].update(questions="q1"), "questions must be a list"),
    (lambda e: e[0].update(colour="red"), "unknown field(s) ['colour']"),
])
def test_the_checker_catches(kit, labels, change, message):
    found = problems(_broken(kit, change), labels)
    assert any(message in p for p in found), found


def test_the_checker_catches_a_wrong_question(kit, labels):
    fake = {"ch01_concepts": {"q1": {"ex-ch1-soft-labels"}, "q9": {"ex-ch1-classify"}}}
    entries = [e for e in kit["exercises"] if e["label"].startswith("ex-ch1-")]
    chapter1 = {k: v for k, v in labels.items() if k.startswith("ex-ch1-")}
    entries[0] = dict(entries[0], questions=["q7"])
    found = problems({"exercises": entries}, chapter1, fake)
    assert any("has no question q7" in p for p in found), found
    assert any("q9 cites 'ex-ch1-classify', but its entry does not list q9" in p for p in found), found
