"""Chapter 5's self-check check_greedy_soup: the recipe passes, each typical mistake is named;
and no check touches the caller's random number generator.
"""

from __future__ import annotations

import pytest
import torch

from kt_helpers import checks
from kt_helpers.fusion import greedy_soup, uniform_soup
from kt_helpers.train import evaluate


def make_greedy(ordered=True, strict=False, stale=False):
    """A greedy soup written as a learner would, with the given mistakes."""

    def my_greedy_soup(models, X_val, y_val):
        scores = [evaluate(m, X_val, y_val) for m in models]
        order = sorted(range(len(models)), key=lambda i: -scores[i]) if ordered else list(range(len(models)))
        chosen, best = [order[0]], scores[order[0]]
        first = best
        for i in order[1:]:
            accuracy = evaluate(uniform_soup([models[j] for j in chosen + [i]]), X_val, y_val)
            threshold = first if stale else best
            if (accuracy > threshold) if strict else (accuracy >= threshold):
                chosen.append(i)
                best = accuracy
        return chosen

    return my_greedy_soup


MISTAKES = {
    "not sorted": (make_greedy(ordered=False), "in the order they were given"),
    "a tie rejected": (make_greedy(strict=True), "only if it *raises*"),
    "compared with the best single": (make_greedy(stale=True), "the best single ingredient's accuracy"),
    "every ingredient": (lambda models, X, y: list(range(len(models))), "a uniform soup"),
}


def test_the_recipe_passes(capsys):
    assert checks.check_greedy_soup(make_greedy()).passed
    assert capsys.readouterr().out.startswith("correct:")


def test_greedy_soup_itself_passes_returning_a_pair():
    assert checks.check_greedy_soup(greedy_soup, verbose=False).passed


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_each_mistake_is_named(name):
    fn, expected = MISTAKES[name]
    result = checks.check_greedy_soup(fn, verbose=False)
    assert not result.passed
    assert result.message.startswith("not yet:") and expected in result.message, result.message
    assert "; and " not in result.message


def test_two_mistakes_are_both_named():
    message = checks.check_greedy_soup(make_greedy(ordered=False, strict=True), verbose=False).message
    assert "in the order they were given" in message and "only if it *raises*" in message


def test_a_choice_on_other_data_is_told_to_use_the_validation_set():
    # Scoring on data other than the X_val passed in (in a notebook: the test set).
    other = torch.randn(300, 8, generator=torch.Generator().manual_seed(5))

    def on_other_data(models, X_val, y_val):
        with torch.no_grad():
            y_other = models[0](other).argmax(1)
        return make_greedy()(models, other, y_other)

    message = checks.check_greedy_soup(on_other_data, verbose=False).message
    assert message.startswith("not yet: on the first set") and "never on the test set" in message


def test_bad_outputs_and_errors_are_reported():
    assert "expected the indices" in checks.check_greedy_soup(lambda m, X, y: "best", verbose=False).message
    assert "expected the indices" in checks.check_greedy_soup(lambda m, X, y: [0, 99], verbose=False).message
    assert "raised IndexError" in checks.check_greedy_soup(lambda m, X, y: m[99], verbose=False).message
    assert checks.check_greedy_soup(lambda m, X, y: torch.tensor(greedy_soup(m, X, y)[1]), verbose=False).passed


def test_fn_must_be_callable():
    with pytest.raises(ValueError, match="The 'fn' parameter of check_greedy_soup must be a function"):
        checks.check_greedy_soup(3)


@pytest.mark.parametrize("name", sorted(checks.__all__[1:]))
def test_no_check_changes_the_callers_random_state(name):
    state = torch.get_rng_state()
    getattr(checks, name)(lambda *args, **kwargs: 0.0, verbose=False)
    assert torch.equal(state, torch.get_rng_state())
