"""The user's own prompt weights (AUTOMATIC1111 syntax) and the defect emphasis, as one list of
weighted fragments of the plain prompt.

A1111 syntax, read as its documentation describes it: ``(text)`` multiplies the weight of
``text`` by 1.1, ``[text]`` divides it by 1.1, ``(text:1.3)`` multiplies it by 1.3; brackets nest
and multiply; ``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\\\`` are literal characters; a bracket
that is never closed weights the rest of the prompt; extra-network tags such as
``<lora:name:0.8>`` are not text and are dropped. compel's ``(text)1.3`` (a number right after the
closing bracket) is read too, as weight 1.3. Not read (taken as text): compel's ``word+`` /
``word--``, A1111's prompt editing ``[a:b:0.5]`` and alternation ``[a|b]``. A weight must be
positive.

The parsers keep the raw prompt's offsets (they blank the markup), so the defect spans index the
raw prompt; the emphasis (``1 + w`` on each defective phrase) *multiplies* the user's weight there,
and both factors are reported.

Pure Python: no torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from grefine_core.errors import InputError
from grefine_core.types import Emphasis

#: Multiplier of one level of ``( )`` (divisor of ``[ ]``).
BRACKET_FACTOR = 1.1

_TOKEN = re.compile(
    r"\\[\\()\[\]]"  # an escaped bracket or backslash: literal
    r"|<[A-Za-z_]+:[^<>]*>"  # an extra-network tag (<lora:...>): not text
    r"|:\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\)"  # ":1.3)" closes a weighted round bracket
    r"|\)((?:\d+(?:\.\d*)?|\.\d+)(?![\w.]))"  # compel: ")1.3" closes with weight 1.3
    r"|[()\[\]]"
    r"|[^\\()\[\]:<]+|[\\:<]",
)


@dataclass(frozen=True)
class WeightedFragment:
    """A run of the plain prompt with one weight.

    :ivar text: the text (markup removed); :ivar weight: the final weight, ``user * emphasis``.
    :ivar user: the user's own weight (A1111 markup); :ivar emphasis: the defect emphasis.
    """

    text: str
    weight: float
    user: float = 1.0
    emphasis: float = 1.0


def user_weights(prompt: str, syntax: str = "a1111") -> list[tuple[int, float]]:
    """``(index in prompt, weight)`` of every character that is text (markup removed).

    :param syntax: ``"a1111"`` reads the markup above; ``"none"`` takes the prompt literally.
    :raises InputError: an unknown ``syntax``.
    """
    if syntax == "none":
        return [(i, 1.0) for i in range(len(prompt))]
    if syntax != "a1111":
        raise InputError(
            f"[plugins.sdxl] prompt_weights = {syntax!r} is not valid; valid: a1111, none"
        )
    out: list[list[float]] = []  # [index, weight]
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for item in out[start:]:
            item[1] *= factor

    for m in _TOKEN.finditer(prompt):
        tok = m.group(0)
        if tok.startswith("\\") and len(tok) == 2:
            out.append([m.start() + 1, 1.0])
        elif tok.startswith("<") and len(tok) > 1:
            continue
        elif m.group(1) is not None or m.group(2) is not None:  # ":1.3)" or ")1.3"
            if round_open:
                weight = float(m.group(1) if m.group(1) is not None else m.group(2))
                if not weight > 0:
                    raise InputError(
                        f"prompt weight {tok.strip()!r} must be > 0; write [text] or a weight "
                        "below 1 to weaken a part of the prompt"
                    )
                scale(round_open.pop(), weight)
            else:  # no bracket to close: literal text
                out.extend([i, 1.0] for i in range(m.start(), m.end()))
        elif tok == "(":
            round_open.append(len(out))
        elif tok == "[":
            square_open.append(len(out))
        elif tok == ")" and round_open:
            scale(round_open.pop(), BRACKET_FACTOR)
        elif tok == "]" and square_open:
            scale(square_open.pop(), 1.0 / BRACKET_FACTOR)
        else:  # text (and unmatched closing brackets, which A1111 keeps as text)
            out.extend([i, 1.0] for i in range(m.start(), m.end()))
    for start in round_open:
        scale(start, BRACKET_FACTOR)
    for start in square_open:
        scale(start, 1.0 / BRACKET_FACTOR)
    return [(int(i), round(w, 6)) for i, w in out]


def plain_text(prompt: str, syntax: str = "a1111") -> str:
    """The prompt without its weight markup (what the text encoders read)."""
    return "".join(prompt[i] for i, _ in user_weights(prompt, syntax))


def snap_to_words(prompt: str, start: int, end: int) -> tuple[int, int]:
    """Widen a span so it neither starts nor ends inside a word (keeps tokenisation unchanged)."""
    while start > 0 and prompt[start - 1].isalnum() and prompt[start].isalnum():
        start -= 1
    while 0 < end < len(prompt) and prompt[end - 1].isalnum() and prompt[end].isalnum():
        end += 1
    return start, end


def emphasis_weights(prompt: str, emphasis: Sequence[Emphasis]) -> list[float]:
    """The defect emphasis of every character of ``prompt`` (1.0 outside the spans).

    Spans are widened to whole words; where spans overlap, the weight farthest from 1 wins.

    :raises InputError: a span outside the prompt or a non-positive weight.
    """
    weights = [1.0] * len(prompt)
    for item in emphasis:
        start, end = (int(v) for v in item.span)
        if not 0 <= start <= end <= len(prompt):
            raise InputError(
                f"emphasis span {item.span} for {item.text!r} lies outside the prompt "
                f"(length {len(prompt)})"
            )
        if not item.weight > 0:
            raise InputError(f"emphasis weight for {item.text!r} must be > 0, got {item.weight}")
        if start == end:
            continue
        start, end = snap_to_words(prompt, start, end)
        for i in range(start, end):
            if abs(item.weight - 1.0) > abs(weights[i] - 1.0):
                weights[i] = float(item.weight)
    return weights


def weighted_fragments(
    prompt: str, emphasis: Sequence[Emphasis] = (), syntax: str = "a1111"
) -> list[WeightedFragment]:
    """The plain prompt as fragments whose weight is the user's (markup) times the emphasis.

    Concatenating the texts gives :func:`plain_text`; neighbours of equal weights are merged.
    """
    emph = emphasis_weights(prompt, emphasis)
    out: list[WeightedFragment] = []
    for i, user in user_weights(prompt, syntax):
        e = emph[i]
        weight = round(user * e, 6)
        last = out[-1] if out else None
        if last is not None and (last.weight, last.user, last.emphasis) == (weight, user, e):
            out[-1] = WeightedFragment(last.text + prompt[i], weight, user, e)
        else:
            out.append(WeightedFragment(prompt[i], weight, user, e))
    return out or [WeightedFragment("", 1.0)]


def weight_report(fragments: Sequence[WeightedFragment]) -> list[dict[str, object]]:
    """The weighted fragments for the report: text, final weight and both factors."""
    return [
        {"text": f.text.strip(), "weight": f.weight, "user": f.user, "emphasis": f.emphasis}
        for f in fragments
        if (f.weight != 1.0 or f.user != 1.0 or f.emphasis != 1.0) and f.text.strip()
    ]
