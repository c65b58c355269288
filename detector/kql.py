"""The KQL semantics the rule uses, as small pure functions.

Decisions (each pinned by tests in tests/test_kql.py):

* Strings are never null in Kusto: a missing string is ``""``. ``dynamic`` values are Python JSON
  values (``None`` for null).
* Case folding (``=~``, ``has``, ``tolower``) maps one character to one character, like .NET's
  invariant simple case mapping: characters whose Python mapping would expand (``ß`` -> ``SS``) keep
  their own form.
* Terms are maximal runs of letters and digits (``str.isalnum``, i.e. Unicode letters and digits,
  as .NET's ``char.IsLetterOrDigit``); everything else separates terms.
* ``has`` on a dynamic array applies to the array's JSON text, which is what Kusto searches; the
  quotes and commas of the JSON keep elements apart, so ``["Succeeded"]`` has ``Succeeded`` and
  ``["Successful"]`` has not ``Success``.
* ``min``/``max`` on strings use ordinal order of UTF-16 code units (.NET ordinal comparison).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any, cast

JsonValue = Any
"""A parsed JSON value: dict, list, str, int, float, bool or None (Kusto ``dynamic``)."""


def _simple_lower(ch: str) -> str:
    low = ch.lower()
    return low if len(low) == 1 else ch


def _simple_upper(ch: str) -> str:
    up = ch.upper()
    return up if len(up) == 1 else ch


def tolower(text: str) -> str:
    """``tolower()``: one-to-one lower-casing."""
    if text.isascii():
        return text.lower()
    return "".join(_simple_lower(c) for c in text)


def _fold(text: str) -> str:
    # Ordinal ignore-case compares upper-cased characters.
    if text.isascii():
        return text.upper()
    return "".join(_simple_upper(c) for c in text)


# Non-ASCII characters whose ordinal upper case is an ASCII letter, by that letter: U+0131 (dotless i) and
# U+017F (long s). Computing it over all of Unicode takes 0.2 s; tests/test_kql.py proves this table complete.
ASCII_TWINS = {"I": "\u0131", "S": "\u017f"}


def case_twins(text: str) -> str:
    """The non-ASCII characters that ``=~`` and ``has`` take for one of ``text``'s letters.

    ``extensions`` =~ the same word spelled with U+017F (long s) and U+0131 (dotless i), so a byte
    prefilter that folds only ASCII case must also keep lines holding them.
    """
    return "".join(dict.fromkeys(ch for letter in _fold(text) for ch in ASCII_TWINS.get(letter, "")))


def equals_ci(left: str, right: str) -> bool:
    """``left =~ right``."""
    return len(left) == len(right) and _fold(left) == _fold(right)


def _is_term_char(ch: str) -> bool:
    return ch.isalnum()


def has(haystack: str, needle: str) -> bool:
    """``haystack has needle``: the needle occurs case-insensitively on term boundaries.

    For a needle that is one term this is "the needle is one of the haystack's terms". A needle that
    spans several terms (``"a/b"``) must occur as a phrase whose alphanumeric ends sit on term
    boundaries. An empty needle matches nothing (a decision: the rule never asks for one).
    """
    if needle == "":
        return False
    h = _fold(haystack)
    n = _fold(needle)
    start = 0
    while True:
        i = h.find(n, start)
        if i < 0:
            return False
        end = i + len(n)
        left_ok = not _is_term_char(n[0]) or i == 0 or not _is_term_char(h[i - 1])
        right_ok = not _is_term_char(n[-1]) or end == len(h) or not _is_term_char(h[end])
        if left_ok and right_ok:
            return True
        start = i + 1


def to_json_text(value: JsonValue) -> str:
    """Compact JSON text of a dynamic value, as Kusto prints it (no spaces, non-ASCII kept)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _not_a_number(text: str) -> float:
    raise ValueError(f"{text} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of the range of a JSON number")
    return value


def _unique_keys(pairs: list[tuple[str, JsonValue]]) -> dict[str, JsonValue]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"the key {next(k for i, k in enumerate(keys) if k in keys[:i])!r} appears twice")
    return dict(pairs)


# One decoder for every call: json.loads with options would build a new one each time (a measurable share
# of a replay, which parses thousands of lines).
_DECODER = json.JSONDecoder(parse_constant=_not_a_number, parse_float=_finite)
_DECODER_UNIQUE_KEYS = json.JSONDecoder(parse_constant=_not_a_number, parse_float=_finite,
                                        object_pairs_hook=_unique_keys)


def loads(text: str | bytes, *, unique_keys: bool = False) -> JsonValue:
    """Standard JSON only, the one JSON reader for every input the detector parses.

    ``NaN``/``Infinity`` and numbers that overflow to infinity are not numbers (Kusto's parse_json keeps
    such text as a string), and nesting deeper than Python's parser can follow (a hostile 100,000-deep
    document) is refused: both raise ``ValueError``, as any other text that is not JSON. With
    ``unique_keys`` (allowlist files: a security control), an object naming a key twice is refused too,
    since readers disagree on which copy counts. Bytes are decoded as ``json.loads`` decodes them (UTF-8,
    a UTF-8 BOM skipped, or UTF-16/32 by their NUL pattern).
    """
    decoder = _DECODER_UNIQUE_KEYS if unique_keys else _DECODER
    try:
        if isinstance(text, bytes):
            text = text.decode(json.detect_encoding(text), "surrogatepass")
        return cast(JsonValue, decoder.decode(text))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def has_any(value: str | Sequence[JsonValue], needles: Iterable[str]) -> bool:
    """``value has_any (needles)``; a list is searched as its JSON text."""
    text = value if isinstance(value, str) else to_json_text(list(value))
    return any(has(text, n) for n in needles)


MAX_DYNAMIC_DEPTH = 64
"""Deepest nesting a dynamic value may have (a decision: real insight objects nest two levels). Deeper
values are refused where they enter, so printing them later (``--json``, payloads, state) can never hit
Python's recursion limit."""


def nonstandard(value: JsonValue, limit: int = MAX_DYNAMIC_DEPTH) -> str | None:
    """Why ``value`` would not print as standard JSON: ``"deep"`` (lists/objects nested more than ``limit``
    levels) or ``"nan"`` (a NaN or infinite number, which JSON has no text for); None when it would.

    Level by level, without recursion (a hostile value may nest far deeper than Python's recursion limit),
    looking at each element once.
    """
    level, depth = [value], 1
    while level:
        below: list[JsonValue] = []
        for item in level:
            if isinstance(item, dict):
                if depth > limit:
                    return "deep"
                below.extend(item.values())
            elif isinstance(item, list):
                if depth > limit:
                    return "deep"
                below.extend(item)
            elif isinstance(item, float) and not math.isfinite(item):
                return "nan"
        level, depth = below, depth + 1
    return None


def parse_json(value: JsonValue) -> JsonValue:
    """``parse_json()``: text that is JSON becomes that value; other text stays the text itself.

    Text nesting deeper than :data:`MAX_DYNAMIC_DEPTH` stays text too.
    """
    if not isinstance(value, str):
        return value
    try:
        parsed = loads(value)
    except ValueError:
        return value
    return value if nonstandard(parsed) is not None else parsed  # loads refused NaN: only depth is left


def member(value: JsonValue, key: str) -> JsonValue:
    """``value.key`` on a dynamic: case-sensitive property access, null when absent or not an object."""
    if isinstance(value, dict):
        return value.get(key)
    return None


def tostring(value: JsonValue) -> str:
    """``tostring()``: null -> ``""``; strings as they are; other values as compact JSON text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")  # as Kusto prints reals
    return to_json_text(value)


def split(value: JsonValue, delimiter: str) -> list[str]:
    """``split(value, delimiter)``; a non-string argument is first turned into its string form."""
    return tostring(value).split(delimiter)


def at(items: Sequence[str], index: int) -> str | None:
    """``array[index]``: negative indexes count from the end; out of range is null."""
    if -len(items) <= index < len(items):
        return items[index]
    return None


def between(value: int | None, low: int | None, high: int | None) -> bool:
    """``value between (low .. high)``: inclusive at both ends; null anywhere is false."""
    if value is None or low is None or high is None:
        return False
    return low <= value <= high


def isnotempty(value: str | None) -> bool:
    """``isnotempty()``: neither null nor the empty string."""
    return value is not None and value != ""


def ordinal_key(text: str) -> bytes:
    """Sort key giving .NET ordinal (UTF-16 code unit) order."""
    return text.encode("utf-16-be", "surrogatepass")


def max_string(values: Iterable[str]) -> str:
    """``max()`` over a string column: ordinal order, ``""`` when there is nothing."""
    best = ""
    best_key = b""
    for v in values:
        k = ordinal_key(v)
        if k > best_key:
            best, best_key = v, k
    return best


def dynamic_equals(value: JsonValue, text: str) -> bool:
    """``dynamic == "text"``: null is false; other values compare by their string form, case-sensitive.

    So a JSON boolean ``true`` is ``"true"`` and does not equal ``"True"``.
    """
    if value is None:
        return False
    return tostring(value) == text
