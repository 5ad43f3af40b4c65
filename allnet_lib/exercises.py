"""Exercises that check themselves (issue 12).

An exercise with a computable answer (a number, a few numbers, a set of names) has an entry in
:data:`CHECKS`, keyed by its chapter (the notebook's name without its number: ``"backpropagation"``
for ``theory/03_backpropagation``) and its number in that chapter. In the chapter, the cell after
the exercise sets ``answer`` and calls :func:`check`::

    from allnet_lib import exercises
    answer = ...  # your answer
    exercises.check("convolutional_networks", 1, answer)

:func:`check` never raises for a wrong, missing or malformed answer: it returns a :class:`Result`
(true when right) whose text says right, or what is wrong and a hint. Jupyter shows that text
when the call is a cell's last line. Expected values are written here from the exercise's own
definitions (formulas, the report's numbers), not computed with the library functions that the
solutions use, so a solution checks the library too.

A "run your own experiment" exercise (:data:`MEASURED`, one per experiment chapter) has no
fixed answer: ``answer`` is what the student's own run measured. Its check accepts any
measurement of the right form and says what to compare; the interpretation is graded by hand.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from allnet_lib.theory.classify import CNMC_TRAIN_COUNTS


@dataclass(frozen=True)
class Exercise:
    """One checkable exercise: what ``answer`` must be (``form``, shown in the student's stub),
    the expected value, how close counts as right, and a hint for a wrong answer."""

    chapter: str
    number: int
    form: str
    expected: object  # a number, a tuple of numbers, or a frozenset of names
    hint: str
    rel_tol: float = 1e-6
    abs_tol: float = 0.0


@dataclass(frozen=True)
class Result:
    """The verdict of :func:`check`: true when right; its text is what the student reads."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return self.message

    __repr__ = __str__


def _exercises(*items: Exercise) -> dict[tuple[str, int], Exercise]:
    return {(e.chapter, e.number): e for e in items}


C_NMC_ALL, C_NMC_HEM = CNMC_TRAIN_COUNTS["all"], CNMC_TRAIN_COUNTS["hem"]  # the real training folds

CHECKS: dict[tuple[str, int], Exercise] = _exercises(
    # Part 1
    Exercise("learning_from_data", 2, "(accuracy, sensitivity, specificity) of always answering hem",
             (C_NMC_HEM / (C_NMC_ALL + C_NMC_HEM), 0.0, 1.0),
             "ALL is the positive class: a classifier that never says ALL finds no blast "
             "(sensitivity) and is right on every normal cell (specificity); its accuracy is the "
             "share of hem cells.", abs_tol=5e-4),
    Exercise("gradient_descent", 1, "the largest multiple of `critical` at which momentum 0.9 still converges",
             1.9, "`critical` is 2 / lambda_max and the bound with momentum is 2 (1 + beta) / lambda_max: "
             "divide one by the other.", abs_tol=1e-3),
    Exercise("gradient_descent", 4, "(gradient steps of mini-batch descent, steps of batch descent)",
             (math.ceil(20_000 / 30) * 100, 100),
             "An epoch of mini-batches of 30 makes one step per batch, the last one smaller (round up); "
             "batch descent makes one step per epoch."),
    Exercise("backpropagation", 1, "the set of parameter names whose check fails, e.g. {\"W2\"}",
             frozenset({"W1", "b1"}),
             "Follow the chain rule: which gradients are computed from delta1, the only quantity the "
             "bug changes?"),
    Exercise("activations_and_losses", 2, "(largest z with finite np.exp(z) in float64, the same in float32)",
             (709.782712893384, 88.72283935546875),
             "exp(z) overflows where z passes the logarithm of the largest number the type can hold: "
             "np.finfo(dtype).max.", abs_tol=0.01),
    Exercise("convolutional_networks", 1, "(output side, parameters of the layer)", (55, 11 * 11 * 3 * 96 + 96),
             "Output side: floor((n - k) / s) + 1 for 'valid' padding. Parameters: one weight per "
             "filter tap and input channel, plus one bias per filter."),
    Exercise("convolutional_networks", 2, "(parameters of two stacked 3x3 convolutions, of one 5x5)",
             (2 * (3 * 3 * 256 * 256 + 256), 5 * 5 * 256 * 256 + 256),
             "Each convolution has k * k * C * F weights and F biases; the stack has two of them."),
    Exercise("convolutional_networks", 3, "parameters of a 1x1 convolution, 256 inputs, 64 filters",
             256 * 64 + 64, "A 1x1 filter has one weight per input channel, plus its bias."),
    Exercise("convolutional_networks", 4, "(parameters of dense1, dense2, the output layer)",
             (12_800 * 4096 + 4096, 4096 * 1000 + 1000, 1000 * 2 + 2),
             "A dense layer has n_in * n_out weights and n_out biases; the head's widths are "
             "12,800 -> 4,096 -> 1,000 -> 2."),
    Exercise("overfitting_and_regularisation", 4, "Keras's l2 for the report's lambda", 0.01 / (2 * 20_000),
             "Keras's L2(l2) adds l2 * sum(w**2); the report's penalty is lambda / (2 N) * sum(w**2)."),
    # Part 2
    Exercise("classic_architectures", 3, "parameters of AlexNet's fc6 at 227 x 227", 6 * 6 * 256 * 4096 + 4096,
             "fc6 sees the flattened 6 x 6 x 256 feature map: one weight per input value and unit, "
             "plus one bias per unit."),
    Exercise("the_proposed_model", 1, "parameters of the model with global average pooling",
             7_535_040 + (512 * 4096 + 4096) + (4096 * 1000 + 1000) + (1000 * 2 + 2),
             "The convolutional part is unchanged; dense1 now sees 512 pooled channels instead of "
             "12,800 flattened values."),
    Exercise("the_proposed_model", 2, "(megabytes of the float32 weights, megabytes with Adam's state)",
             (64_066_938 * 4 / 1e6, 3 * 64_066_938 * 4 / 1e6),
             "A float32 takes 4 bytes; Adam keeps two more numbers per weight.", rel_tol=0.06),
)


@dataclass(frozen=True)
class Measured:
    """A "run your own experiment" exercise (issue 12, item 5): ``answer`` is what the student's
    own run measured, so no fixed value is right. Its check accepts any answer of the right form
    (``n`` finite numbers within [``low``, ``high``]; NaN allowed at the positions ``nan_ok``,
    for a score the run could not define) and says what to compare next (``hint``); reading the
    result is the student's part, graded by hand (the solution's text). The teacher's answer runs
    in the chapter itself (the book build executes it), not in the unit tests."""

    chapter: str
    number: int
    form: str
    n: int
    hint: str
    low: float = 0.0
    high: float = 1.0
    nan_ok: tuple[int, ...] = ()


#: The experiment chapters' "run your own experiment" exercises (one per chapter 5-9).
MEASURED: dict[tuple[str, int], Measured] = {(m.chapter, m.number): m for m in (
    Measured("training", 4, "(unseen-subject balanced accuracy with the chapter's split seed, with the other seed)", 2,
             "put the two intervals side by side: if they overlap, this data cannot tell the two splits "
             "apart, and the difference is what one choice of test people is worth."),
    Measured("looking_inside", 4, "(share of heat on the cell for that subject's cells, chance level for them)", 2,
             "heat on the cell well above chance means the model looks at the cell; near chance, its "
             "evidence for this person lies elsewhere (background, size, position).", nan_ok=(0,)),
    Measured("results", 4, "(balanced accuracy of the forest on the chapter's split, on the other split)", 2,
             "compare the change with the two intervals: a change inside them is split-to-split noise."),
    Measured("beyond_the_report", 4, "(accuracy difference of your ensemble minus the chosen single model, "
             "its 95 % interval low, high)", 3,
             "an interval that contains 0 means this test set cannot tell your ensemble from the single model.",
             low=-1.0, nan_ok=(1, 2)),
    Measured("conclusion", 5, "the mean optimism gap (accuracy) of the forest over your seeds", 1,
             "look at the gap of each seed as well: a mean carried by one seed, or gaps of both signs, "
             "is not yet a finding.", low=-1.0, nan_ok=(0,)),
)}


def get(chapter: str, number: int) -> Exercise | Measured:
    """The checkable (or measured) exercise; a KeyError that lists the chapter's exercises with checks."""
    key = (chapter, int(number))
    try:
        return CHECKS[key] if key in CHECKS else MEASURED[key]
    except KeyError:
        known = sorted(n for c, n in [*CHECKS, *MEASURED] if c == chapter)
        where = (f"chapter {chapter!r} has checks for exercises {known}" if known else
                 f"no chapter {chapter!r}; chapters with checks: {sorted({c for c, _ in [*CHECKS, *MEASURED]})}")
        raise KeyError(f"no check for exercise {number} of {chapter!r}: {where}") from None


def _numbers(value) -> list[float] | None:
    """A number or a flat sequence of numbers as floats; None when it is neither."""
    if isinstance(value, (str, bytes, set, frozenset, dict)):
        return None
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    return arr.ravel().tolist() if arr.ndim <= 1 else None


def _count(n: int) -> str:
    return "a number" if n == 1 else f"{n} numbers"


def _close(got: float, want: float, ex: Exercise) -> bool:
    return math.isfinite(got) and math.isclose(got, want, rel_tol=ex.rel_tol, abs_tol=ex.abs_tol)


def _measured_verdict(ex: Measured, answer) -> tuple[bool, str]:
    got = _numbers(answer)
    if got is None:
        return False, f"expected {_count(ex.n)}, got {type(answer).__name__}"
    if len(got) != ex.n:
        return False, f"expected {_count(ex.n)}, got {len(got)}"
    for i, g in enumerate(got):
        if math.isnan(g) and i in ex.nan_ok:
            continue
        if not (math.isfinite(g) and ex.low <= g <= ex.high):
            return False, (f"value {i + 1} ({g:g}) is not a measurement in [{ex.low:g}, {ex.high:g}]"
                           if ex.n > 1 else f"{g:g} is not a measurement in [{ex.low:g}, {ex.high:g}]")
    return True, ""


def _verdict(ex: Exercise, answer) -> tuple[bool, str]:
    if isinstance(ex.expected, frozenset):
        if isinstance(answer, str) or not isinstance(answer, Iterable):
            return False, f"expected a collection of names, got {type(answer).__name__}"
        got = {str(a) for a in answer}
        if got == ex.expected:
            return True, ""
        extra, missing = sorted(got - ex.expected), sorted(ex.expected - got)
        return False, ("; ".join(filter(None, [f"not these: {extra}" if extra else "",
                                               f"{len(missing)} missing" if missing else ""])))
    want = _numbers(ex.expected)
    got = _numbers(answer)
    if got is None:
        return False, f"expected {_count(len(want))}, got {type(answer).__name__}"
    if len(got) != len(want):
        return False, f"expected {_count(len(want))}, got {len(got)}"
    wrong = [i for i, (g, w) in enumerate(zip(got, want)) if not _close(g, w, ex)]
    if not wrong:
        return True, ""
    if len(want) == 1:
        return False, f"{got[0]:g} is not right"
    return False, "wrong: " + ", ".join(f"value {i + 1} (you have {got[i]:g})" for i in wrong)


def check(chapter: str, number: int, answer) -> Result:
    """Is ``answer`` right for exercise ``number`` of ``chapter``? Never raises for the answer:
    an unanswered (``...`` or ``None``), malformed or wrong answer gives a false :class:`Result`
    whose text says what is wrong, what form the answer takes, and a hint. (An unknown
    chapter or number is a mistake in the notebook, not in the answer: KeyError.)"""
    ex = get(chapter, number)
    title = f"Exercise {number} ({chapter})"
    if answer is ... or answer is None:
        return Result(False, f"{title}: not answered yet. Set `answer` to {ex.form}, then run this "
                             f"cell again. Hint: {ex.hint}")
    measured = isinstance(ex, Measured)
    try:
        ok, why = _measured_verdict(ex, answer) if measured else _verdict(ex, answer)
    except Exception as exc:  # an answer of a strange type must not crash the check
        ok, why = False, f"could not read the answer ({type(exc).__name__}: {exc})"
    if ok and measured:
        values = ", ".join(f"{v:.3f}" for v in _numbers(answer))
        return Result(True, f"{title}: measured ({values}). Your own run: no value is right or wrong "
                            f"here; now interpret it: {ex.hint}")
    if ok:
        return Result(True, f"{title}: right.")
    return Result(False, f"{title}: not yet: {why}. The answer is {ex.form}. Hint: {ex.hint}")
