"""Allowlist: scoped, expiring exceptions that suppress known-good alerts, failing closed.

An entry is data (``from_dict``/``to_dict``): an id, one or more conditions that must all hold, a
required reason, who created it and when, an optional expiry (UTC), an optional recurring maintenance
window, and an enabled flag. Evaluation is pure; stores keep entries and their hit counts.

Fail closed: an entry that does not validate (unknown field or operator, bad regex or CIDR, an empty
value, a regex that matches the empty string, no conditions, no reason, a bad time zone) or that is
too broad (its conditions together match more than 1% of the breadth corpus, see ``breadth.py``)
suppresses nothing and is reported. Disabled and expired entries suppress nothing either.

The allowlist as a whole has a budget: the entries in force together may match at most 2% of the breadth
corpus (``breadth.BUDGET_MATCHES``), so many entries that are each narrow enough cannot add up to a
silenced detector (124 entries of one IPv4 ``/7`` each pass alone and together match 67% of it). When
the active entries exceed it, the broadest stop suppressing (decision): entries are taken narrowest
first (fewest corpus alerts; ties: the older ``created_at``, an entry without one last, then the id) and
each is kept while the union of the kept entries stays within the budget; the rest are set aside and
reported. The order never depends on the table's or file's order, which whoever writes the allowlist
controls; an entry that matches no corpus alert (one caller on one VM) never counts against the budget,
so a flood of broad entries cannot push a tenant's specific exceptions out.

Matching rules (decisions):

* every string operator is case-insensitive; ``regex`` is a full match (anchored at both ends),
  compiled once per entry by RE2 (``google-re2``), whose matching time is linear in the input: a
  pattern such as ``([a-z0-9-]+)*\\.prod`` cannot take exponential time on a long VM name. Features
  RE2 lacks (backreferences, lookaround, possessive quantifiers) make the entry invalid, with RE2's
  reason;
* fields about the Run Command (caller, IP, subscription, resource group, VM, ...) are tested against
  the alert; fields about UEBA matches (action type, source location) must hold for **every** UEBA
  match of the alert, so an exception for "sign-ins from Seattle" never hides an alert that also
  carries a sign-in from elsewhere;
* the maintenance window is tested against the Run Command's StartTime in the window's time zone
  (IANA, so daylight-saving changes follow local clocks); an end before the start crosses midnight,
  the weekday being that of the start.
"""

from __future__ import annotations

import bisect
import functools
import importlib.resources
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import time as dtime
from typing import Any, Literal, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import re2  # type: ignore[import-untyped]

from . import kql
from .breadth import (
    ADDRESS_BLOCKS,
    BUDGET_MATCHES,
    BUDGET_SHARE,
    CORPUS_SIZE,
    MAX_MATCHES,
    MAX_SHARE,
    address_sample,
    corpus,
)
from .model import Alert
from .timestamps import Ticks, format_datetime, parse_datetime, to_datetime

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

# field name -> how to read it from an alert (a list: every value must satisfy the condition).
_ALERT_FIELDS: dict[str, Callable[[Alert], list[str]]] = {
    "caller": lambda a: [a.caller],
    "caller_ip": lambda a: [a.caller_ip],
    "subscription": lambda a: [a.subscription],
    "resource_group": lambda a: [a.resource_group],
    "vm_name": lambda a: [a.vm_name],
    "resource_id": lambda a: [a.scope],
    "account_upn_suffix": lambda a: [a.account_upn_suffix],
    "correlation_id": lambda a: [a.correlation_id],
    "rule_id": lambda a: [a.rule_id],
    "ueba_action_type": lambda a: [r.ueba_action_type for r in a.rows],
    "ueba_source_location": lambda a: [r.ueba_source_location for r in a.rows],
}
FIELDS: tuple[str, ...] = tuple(_ALERT_FIELDS)
# Fields with exactly one value per alert: an equals/in condition on them can index the entry.
_INDEXABLE: tuple[str, ...] = ("caller", "caller_ip", "subscription", "resource_group", "vm_name", "resource_id",
                               "account_upn_suffix", "correlation_id", "rule_id")
OPERATORS: tuple[str, ...] = ("equals", "contains", "startswith", "endswith", "in", "cidr", "regex")

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.case_sensitive = False
_RE2_OPTIONS.log_errors = False  # a refused pattern is reported once, as an InvalidEntry, not on stderr


class InvalidEntry(ValueError):
    """Why an allowlist entry cannot be used."""


@dataclass(frozen=True, slots=True)
class Condition:
    field_name: str
    operator: str
    value: str | tuple[str, ...]
    # A value is first normalised (lower-cased, parsed as an address, or UTF-8) and then tested: the breadth
    # corpus keeps its columns normalised once, so checking an entry against it costs one test per alert.
    _normal_form: str = dc_field(repr=False, compare=False, hash=False, default="lower")
    _test: Callable[[Any], bool] = dc_field(repr=False, compare=False, hash=False, default=lambda _: False)

    def holds(self, alert: Alert) -> bool:
        values = _ALERT_FIELDS[self.field_name](alert)
        normalize = _NORMALIZERS[self._normal_form]
        return bool(values) and all(self._test(normalize(v)) for v in values)

    def to_dict(self) -> dict[str, Any]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"field": self.field_name, "op": self.operator, "value": value}

    def holds_for_sample_address(self, position: int) -> bool:
        """Whether the condition (on the caller's IP) holds for the address at ``position`` of the address sample."""
        return bool(self._test(_address_column(self._normal_form)[position]))

    def corpus_positions(self) -> list[int]:
        """Positions of the breadth-corpus alerts the condition holds for, one test per alert (a single-valued
        field's column is read flat: the per-alert ``all`` over one value costs more than the test).

        A regex on a single-valued field is tested only on the values between the smallest and the largest
        string RE2 says it could fully match (``possiblematchrange``: every anchored match lies within them,
        case folding included), found by bisection: a pattern with a literal start reads a handful of values.
        """
        column, test = _corpus_column(self.field_name, self._normal_form), self._test
        if self.field_name not in _INDEXABLE:
            return [p for p, values in enumerate(column) if values and all(map(test, values))]
        if self.operator == "regex" and isinstance(self.value, str):
            try:
                low, high = _compile_regex(self.value).possiblematchrange(_RANGE_BYTES)
            except re2.error:  # no range to be had (RE2 says so): every value is tested below
                pass
            else:
                values, positions = _sorted_corpus_bytes(self.field_name)
                start, end = bisect.bisect_left(values, low), bisect.bisect_right(values, high)
                return sorted(p for value, p in zip(values[start:end], positions[start:end], strict=True)
                              if test(value))
        return [p for p, (value,) in enumerate(column) if test(value)]


@functools.lru_cache(maxsize=65536)
def _address(text: str) -> tuple[int, int] | None:
    """(IP version, address as an integer), parsed once per distinct caller IP."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return address.version, int(address)


@functools.lru_cache(maxsize=4096)
def _compile_regex(value: str) -> Any:
    """An RE2 pattern (case-insensitive); ``re2.error`` when RE2 cannot compile it."""
    return re2.compile(value, _RE2_OPTIONS)


def _utf8(text: str) -> bytes:
    """The text as RE2 reads it. A lone surrogate (JSON's ``\\ud800`` escape) is kept as its three bytes, which
    RE2 takes for an invalid character that ``.`` matches: encoding strictly (what re2 does with a str) raised
    UnicodeEncodeError and stopped the run. Bytes also spare re2's per-call conversion (3x faster on the corpus)."""
    return text.encode("utf-8", "surrogatepass")


# How a value is normalised before an operator tests it: string operators compare lower-cased text, cidr an
# address, regex (case-insensitive by its options) the text's UTF-8 bytes.
_NORMALIZERS: dict[str, Callable[[str], Any]] = {"lower": kql.tolower, "address": _address, "utf8": _utf8}


def _build_test(operator: str, value: str | tuple[str, ...]) -> tuple[str, Callable[[Any], bool]]:
    """The normal form (a key of :data:`_NORMALIZERS`) the operator reads, and its test on a normalised value."""
    if isinstance(value, tuple):  # only "in" takes a list (parse_condition guarantees it)
        wanted = {kql.tolower(v) for v in value}
        return "lower", wanted.__contains__
    needle = kql.tolower(value)
    if operator == "equals":
        return "lower", needle.__eq__
    if operator == "contains":
        return "lower", lambda s: needle in s
    if operator == "startswith":
        return "lower", lambda s: s.startswith(needle)
    if operator == "endswith":
        return "lower", lambda s: s.endswith(needle)
    if operator == "cidr":
        networks = [(n.version, int(n.network_address), int(n.netmask))
                    for n in (ipaddress.ip_network(part.strip(), strict=False) for part in value.split(","))]

        def in_networks(parsed: tuple[int, int] | None) -> bool:
            if parsed is None:
                return False
            version, number = parsed
            return any(v == version and number & mask == net for v, net, mask in networks)
        return "address", in_networks
    if operator == "regex":
        pattern = _compile_regex(value)
        return "utf8", lambda b: pattern.fullmatch(b) is not None
    raise InvalidEntry(f"unknown operator {operator!r}")


def parse_condition(raw: Any, index: int) -> Condition:
    where = f"condition {index + 1}"
    if not isinstance(raw, Mapping):
        raise InvalidEntry(f"{where}: expected an object with field, op and value")
    name, operator, value = raw.get("field"), raw.get("op", raw.get("operator")), raw.get("value")
    if name not in _ALERT_FIELDS:
        raise InvalidEntry(f"{where}: unknown field {name!r} (fields: {', '.join(FIELDS)})")
    if operator not in OPERATORS:
        raise InvalidEntry(f"{where}: unknown operator {operator!r} (operators: {', '.join(OPERATORS)})")
    if operator == "in":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",")]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise InvalidEntry(f"{where}: 'in' needs a non-empty list of non-empty strings")
        frozen: str | tuple[str, ...] = tuple(value)
    else:
        if not isinstance(value, str) or not value.strip():
            raise InvalidEntry(f"{where}: {operator!r} needs a non-empty string value")
        frozen = value
    if operator == "cidr" and isinstance(frozen, str):
        for part in frozen.split(","):
            try:
                network = ipaddress.ip_network(part.strip(), strict=False)
            except ValueError:
                raise InvalidEntry(f"{where}: {part.strip()!r} is not a CIDR range") from None
            if network.prefixlen == 0:
                raise InvalidEntry(f"{where}: {part.strip()!r} matches every address")
    if operator == "regex" and isinstance(frozen, str):
        try:
            pattern = _compile_regex(frozen)
        except re2.error as exc:
            reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else exc
            raise InvalidEntry(f"{where}: bad regex {frozen!r} for RE2 (linear-time matching: no backreferences "
                               f"or lookaround): {reason}") from None
        if pattern.fullmatch("") is not None:
            raise InvalidEntry(f"{where}: regex {frozen!r} matches (nearly) everything, an empty value included")
    normal_form, test = _build_test(operator, frozen)
    return Condition(field_name=name, operator=operator, value=frozen, _normal_form=normal_form, _test=test)


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    weekdays: tuple[int, ...]
    start: dtime
    end: dtime
    timezone: str

    def contains(self, ticks: Ticks) -> bool:
        local = to_datetime(ticks).astimezone(_zone(self.timezone))
        t = local.time().replace(tzinfo=None)
        day = local.weekday()
        if self.start <= self.end:
            return day in self.weekdays and self.start <= t < self.end
        # Crosses midnight: the part after midnight belongs to the previous day's window.
        if t >= self.start:
            return day in self.weekdays
        if t < self.end:
            return (day - 1) % 7 in self.weekdays
        return False

    def to_dict(self) -> dict[str, Any]:
        return {"weekdays": [WEEKDAYS[d] for d in self.weekdays], "start": self.start.strftime("%H:%M"),
                "end": self.end.strftime("%H:%M"), "timezone": self.timezone}


# IANA's geographic areas (and Etc): a canonical zone name is "Area/Location" under one of them, or UTC.
# This refuses the host's "localtime", "Factory" (no offset at all), "posixrules", the posix/ and right/
# trees, whose meaning depends on the machine.
_ZONE_AREAS = ("Africa", "America", "Antarctica", "Arctic", "Asia", "Atlantic", "Australia", "Europe", "Indian",
               "Pacific", "Etc")


@functools.cache
def _iana_names() -> tuple[frozenset[str], dict[str, str]]:
    """IANA's current zone names and its links (old alias -> the zone it names), from the ``tzdata`` package.

    Current: a zone of its own in ``tzdata.zi`` (``Asia/Kolkata``, ``Etc/GMT+5``) or a name a country's row
    lists in ``zone.tab``/``zone1970.tab`` (``Europe/Amsterdam`` is a link since 2022b, yet the Netherlands'
    zone). Read from the package, not the host's files, so the verdict is the same on every machine.
    """
    data = importlib.resources.files("tzdata") / "zoneinfo"
    zones: set[str] = set()
    links: dict[str, str] = {}
    for line in (data / "tzdata.zi").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "Z":  # Z NAME rules...
            zones.add(fields[1])
        elif len(fields) >= 3 and fields[0] == "L":  # L TARGET ALIAS
            links[fields[2]] = fields[1]
    for table in ("zone.tab", "zone1970.tab"):
        zones.update(line.split("\t")[2] for line in (data / table).read_text(encoding="utf-8").splitlines()
                     if line and not line.startswith("#"))
    return frozenset(zones), links


def _check_zone(zone: str) -> None:
    """Refuse a zone that is not canonical; an old alias (``Asia/Calcutta``, ``US/Eastern``) is told the
    canonical name to write instead. Decision: refused, not normalised, so an entry shows the zone its
    author wrote, and ``allowlist add`` says at once which name to use."""
    current, links = _iana_names()
    if zone in links and zone not in current and zone != "UTC":
        raise InvalidEntry(f"time zone {zone!r} is an old alias; use its canonical IANA name {links[zone]!r}")
    try:
        _zone(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidEntry(f"unknown time zone {zone!r}") from None
    if zone != "UTC" and (zone not in current or zone.split("/", 1)[0] not in _ZONE_AREAS):
        raise InvalidEntry(f"time zone {zone!r} is not a canonical IANA name (Area/Location such as "
                           f"Europe/Berlin, or UTC)")


def _parse_clock(value: Any, what: str) -> dtime:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{1,2}:[0-9]{2}", value.strip()):
        raise InvalidEntry(f"maintenance window {what} must be HH:MM, got {value!r}")
    hours, minutes = (int(x) for x in value.strip().split(":"))
    if hours > 23 or minutes > 59:
        raise InvalidEntry(f"maintenance window {what} out of range: {value!r}")
    return dtime(hours, minutes)


def parse_window(raw: Any) -> MaintenanceWindow:
    if not isinstance(raw, Mapping):
        raise InvalidEntry("maintenance window must be an object")
    days = raw.get("weekdays")
    if isinstance(days, str):
        days = [d.strip() for d in days.split(",")]
    if not isinstance(days, list) or not days:
        raise InvalidEntry("maintenance window needs weekdays, e.g. [\"Sat\", \"Sun\"]")
    indexes = []
    for d in days:
        name = str(d).strip()[:3].title()
        if name not in WEEKDAYS:
            raise InvalidEntry(f"unknown weekday {d!r} (use Mon..Sun)")
        indexes.append(WEEKDAYS.index(name))
    zone = raw.get("timezone")
    if not isinstance(zone, str) or not zone:
        raise InvalidEntry("maintenance window needs an IANA timezone, e.g. Europe/Berlin")
    _check_zone(zone)
    start, end = _parse_clock(raw.get("start"), "start"), _parse_clock(raw.get("end"), "end")
    if start == end:
        raise InvalidEntry("maintenance window start and end are equal")
    return MaintenanceWindow(weekdays=tuple(sorted(set(indexes))), start=start, end=end, timezone=zone)


def _parse_time(raw: Any, what: str) -> Ticks | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise InvalidEntry(f"{what} must be an ISO 8601 time")
    try:
        return parse_datetime(raw)
    except ValueError:
        raise InvalidEntry(f"{what} is not an ISO 8601 time: {raw!r}") from None


@functools.cache
def _corpus_index() -> dict[tuple[str, str], list[int]]:
    """(field, lower-cased value) -> positions in the breadth corpus, for equals/in conditions."""
    index: dict[tuple[str, str], list[int]] = {}
    for position, alert in enumerate(corpus()):
        for name in _INDEXABLE:
            [value] = _ALERT_FIELDS[name](alert)
            index.setdefault((name, kql.tolower(value)), []).append(position)
    return index


@functools.cache
def _corpus_column(field_name: str, normal_form: str) -> tuple[tuple[Any, ...], ...]:
    """Each breadth-corpus alert's values of a field in one normal form, computed once per process."""
    read, normalize = _ALERT_FIELDS[field_name], _NORMALIZERS[normal_form]
    return tuple(tuple(normalize(v) for v in read(alert)) for alert in corpus())


@functools.cache
def _sorted_corpus_bytes(field_name: str) -> tuple[list[bytes], list[int]]:
    """A single-valued field's corpus values as UTF-8, sorted, and the position of each."""
    pairs = sorted((values[0], p) for p, values in enumerate(_corpus_column(field_name, "utf8")))
    return [value for value, _ in pairs], [p for _, p in pairs]


@functools.cache
def _sorted_sample_bytes() -> tuple[list[bytes], list[int]]:
    """The address sample as UTF-8, sorted, and the position of each."""
    pairs = sorted((value, p) for p, value in enumerate(_address_column("utf8")))
    return [value for value, _ in pairs], [p for _, p in pairs]


# RE2's PossibleMatchRange looks at this many leading bytes; its bounds hold for longer matches too.
_RANGE_BYTES = 64


@functools.lru_cache(maxsize=16384)
def _corpus_matches(conditions: tuple[Condition, ...], *, every: bool = False) -> frozenset[int]:
    """Positions of the breadth-corpus alerts that all ``conditions`` match; at most :data:`MAX_MATCHES` + 1 of
    them, enough to tell an entry too broad, unless ``every``. Cached: every run, status and ``allowlist add``
    load the same entries.

    Conditions on ``rule_id`` are left out: the corpus stands for the alerts of every rule, and an entry confined
    to one rule is as broad within that rule's alerts (``rule_id equals <the seed's id>`` beside ``vm_name regex
    .+`` matched no corpus alert, whose rule id is its own, and passed). An entry of ``rule_id`` conditions alone
    matches every alert of its rules.
    """
    measured = [c for c in conditions if c.field_name != "rule_id"]
    if not measured:
        return frozenset(range(CORPUS_SIZE if every else MAX_MATCHES + 1))
    # The corpus is scanned by one condition and the others are tested on what it leaves: an equals/in found
    # through the index, else any but a regex (a call into RE2 costs several times a string test).
    first = next((c for c in measured if c.operator in ("equals", "in") and c.field_name in _INDEXABLE),
                 next((c for c in measured if c.operator != "regex"), measured[0]))
    if first.operator in ("equals", "in") and first.field_name in _INDEXABLE:
        values = first.value if isinstance(first.value, tuple) else (first.value,)
        candidates: Iterable[int] = sorted(
            {p for v in values for p in _corpus_index().get((first.field_name, kql.tolower(v)), ())})
    else:
        candidates = first.corpus_positions()
    rest = [c for c in measured if c is not first]
    alerts = corpus()
    matched: list[int] = []
    for position in candidates:
        if all(c.holds(alerts[position]) for c in rest):
            matched.append(position)
            if len(matched) > MAX_MATCHES and not every:
                break
    return frozenset(matched)


@functools.cache
def _address_column(normal_form: str) -> tuple[Any, ...]:
    """The address sample's addresses in one normal form, computed once per process."""
    return tuple(map(_NORMALIZERS[normal_form], address_sample()))


@functools.cache
def _address_scale() -> dict[int, int]:
    """IP version -> how many corpus alerts one sample address of that version stands for, in :data:`_UNITS` per
    corpus alert divided by :data:`CORPUS_SIZE` (the share of the other conditions multiplies it)."""
    parsed = [_address(a.caller_ip) for a in corpus()]
    return {version: sum(1 for a in parsed if a is not None and a[0] == version) * (_UNITS // CORPUS_SIZE // blocks)
            for version, blocks in ADDRESS_BLOCKS.items()}


# Budget costs are counted in integers: one corpus alert is this many units (exact, and far faster than fractions).
_UNITS = CORPUS_SIZE * ADDRESS_BLOCKS[4] * ADDRESS_BLOCKS[6]


@functools.lru_cache(maxsize=16384)
def _address_weights(conditions: tuple[Condition, ...]) -> tuple[tuple[int, int], ...]:
    """(address-sample position, weight) for each sample address the entry's caller-IP conditions hold for; the
    weight is the corpus alerts that address stands for times the share of the corpus the entry's other
    conditions match (the corpus draws an alert's IP apart from its other fields). Empty for an entry without a
    caller-IP condition, or whose other conditions match no corpus alert (one caller from a range: narrow)."""
    on_ip = [c for c in conditions if c.field_name == "caller_ip"]
    others = tuple(c for c in conditions if c.field_name != "caller_ip")
    share = len(_corpus_matches(others, every=True)) if others else CORPUS_SIZE
    if not on_ip or not share:
        return ()
    candidates: Iterable[int] = range(len(address_sample()))
    ranges = next((c for c in on_ip if c.operator == "cidr"), None)
    pattern = next((c for c in on_ip if c.operator == "regex"), None)
    if ranges is not None and isinstance(ranges.value, str):
        # The sample is sorted by (version, address): a range's addresses are found by bisection.
        keys = _address_column("address")
        networks = [ipaddress.ip_network(part.strip(), strict=False) for part in ranges.value.split(",")]
        candidates = sorted({p for n in networks for p in range(
            bisect.bisect_left(keys, (n.version, int(n.network_address))),
            bisect.bisect_right(keys, (n.version, int(n.broadcast_address))))})
    elif pattern is not None and isinstance(pattern.value, str):
        try:  # as in Condition.corpus_positions: only the values RE2 says the pattern could match
            low, high = _compile_regex(pattern.value).possiblematchrange(_RANGE_BYTES)
        except re2.error:
            pass
        else:
            values, positions = _sorted_sample_bytes()
            candidates = sorted(positions[bisect.bisect_left(values, low):bisect.bisect_right(values, high)])
    scale, v4_count = _address_scale(), ADDRESS_BLOCKS[4]
    return tuple((p, share * scale[4 if p < v4_count else 6]) for p in candidates
                 if all(c.holds_for_sample_address(p) for c in on_ip))


def _in_alerts(units: int) -> int:
    """A cost in :data:`_UNITS`, as whole corpus alerts (rounded up)."""
    return -(-units // _UNITS)


@dataclass(slots=True)
class _BudgetTally:
    """What a set of entries costs against the budget: the breadth-corpus alerts they match together, or, when
    more, the corpus alerts matched by the entries without a caller-IP condition plus the share of the address
    sample (weighted, see :func:`_address_weights`) the others match. The second measure sees an IP range that
    happens to hold no corpus address: the corpus alone let a few hundred such /10s hide a quarter of the IPv4
    space at no cost."""

    positions: set[int] = dc_field(default_factory=set)
    plain_positions: set[int] = dc_field(default_factory=set)
    weights: dict[int, int] = dc_field(default_factory=dict)
    address_total: int = 0

    def cost(self) -> int:
        """In :data:`_UNITS` per corpus alert."""
        return max(len(self.positions) * _UNITS, len(self.plain_positions) * _UNITS + self.address_total)

    def cost_with(self, entry: AllowlistEntry) -> int:
        positions, weights = _corpus_matches(entry.conditions), _address_weights(entry.conditions)
        plain = len(self.plain_positions) + (len(positions - self.plain_positions) if not weights else 0)
        added = sum(max(0, w - self.weights.get(p, 0)) for p, w in weights)
        return max(len(self.positions | positions) * _UNITS, plain * _UNITS + self.address_total + added)

    def add(self, entry: AllowlistEntry) -> None:
        positions, weights = _corpus_matches(entry.conditions), _address_weights(entry.conditions)
        self.positions |= positions
        if not weights:
            self.plain_positions |= positions
        for p, w in weights:
            if w > self.weights.get(p, 0):
                self.address_total += w - self.weights.get(p, 0)
                self.weights[p] = w


def _check_breadth(conditions: tuple[Condition, ...]) -> None:
    """Refuse conditions that, together, match more than :data:`MAX_SHARE` of the breadth corpus."""
    if len(_corpus_matches(conditions)) > MAX_MATCHES:
        raise InvalidEntry(
            f"matches (nearly) everything: its conditions match more than {MAX_MATCHES} of the {CORPUS_SIZE} "
            f"alerts of the breadth corpus ({MAX_SHARE:.0%}); add a narrower condition, e.g. a caller")


@dataclass(frozen=True, slots=True)
class AllowlistEntry:
    id: str
    conditions: tuple[Condition, ...]
    reason: str
    created_by: str
    created_at: Ticks | None
    expires_at: Ticks | None = None
    window: MaintenanceWindow | None = None
    enabled: bool = True

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> AllowlistEntry:
        """Validate one entry; raises :class:`InvalidEntry` naming what is wrong."""
        if not isinstance(raw, Mapping):
            raise InvalidEntry("an entry must be a JSON object")
        entry_id = raw.get("id")
        if not isinstance(entry_id, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", entry_id):
            raise InvalidEntry("id must be 1-64 letters, digits, '.', '_' or '-'")
        reason = raw.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidEntry("a reason is required")
        conditions = raw.get("conditions")
        if not isinstance(conditions, list) or not conditions:
            raise InvalidEntry("at least one condition is required (an entry may not match every alert)")
        parsed = tuple(parse_condition(c, i) for i, c in enumerate(conditions))
        _check_breadth(parsed)
        window = parse_window(raw["window"]) if raw.get("window") else None
        enabled = raw.get("enabled", True)
        if not isinstance(enabled, bool):
            raise InvalidEntry("enabled must be true or false")
        created_by = raw.get("created_by", "")
        return cls(id=entry_id, conditions=parsed, reason=reason.strip(),
                   created_by=created_by if isinstance(created_by, str) else str(created_by),
                   created_at=_parse_time(raw.get("created_at"), "created_at"),
                   expires_at=_parse_time(raw.get("expires_at"), "expires_at"), window=window, enabled=enabled)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "conditions": [c.to_dict() for c in self.conditions], "reason": self.reason,
            "created_by": self.created_by,
            "created_at": format_datetime(self.created_at) if self.created_at is not None else None,
            "expires_at": format_datetime(self.expires_at) if self.expires_at is not None else None,
            "enabled": self.enabled,
        }
        data["window"] = self.window.to_dict() if self.window else None
        return data

    def is_expired(self, now: Ticks) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def matches(self, alert: Alert) -> bool:
        if self.window is not None and not self.window.contains(alert.start):
            return False
        return all(c.holds(alert) for c in self.conditions)


ProblemKind = Literal["invalid", "duplicate", "disabled", "expired", "over_budget"]


@dataclass(frozen=True, slots=True)
class EntryProblem:
    """An entry that suppresses nothing, and why (reported in the run summary)."""

    id: str
    problem: str
    kind: ProblemKind

    def __str__(self) -> str:
        return f"{self.id}: {self.problem}"


class BudgetSummary(TypedDict):
    """The allowlist's budget in the run summary: breadth-corpus alerts matched, against the budget."""

    corpus_alerts: int
    budget: int
    matched: int
    requested: int
    set_aside: list[str]


@dataclass(frozen=True, slots=True)
class AllowlistBudget:
    """How much of the breadth corpus the entries in force match together, against :data:`BUDGET_MATCHES`.

    ``requested`` is what every valid, enabled, unexpired entry would match together; ``matched`` what the
    entries kept in force match; ``set_aside`` the entries that went over the budget (they suppress nothing).
    """

    matched: int = 0
    requested: int = 0
    set_aside: tuple[str, ...] = ()

    @property
    def exceeded(self) -> bool:
        return bool(self.set_aside)

    def describe(self) -> str:
        text = (f"the entries in force together match {self.matched} of the {CORPUS_SIZE} breadth-corpus alerts "
                f"(budget {BUDGET_MATCHES}, {BUDGET_SHARE:.0%})")
        if self.exceeded:
            text = (f"OVER BUDGET: the active entries together would match {self.requested} of the {CORPUS_SIZE} "
                    f"breadth-corpus alerts, over the budget of {BUDGET_MATCHES} ({BUDGET_SHARE:.0%}); the "
                    f"{len(self.set_aside)} broadest entr{'y' if len(self.set_aside) == 1 else 'ies'} suppress "
                    f"nothing: {', '.join(self.set_aside)}; {text}")
        return text

    def to_dict(self) -> BudgetSummary:
        return {"corpus_alerts": CORPUS_SIZE, "budget": BUDGET_MATCHES, "matched": self.matched,
                "requested": self.requested, "set_aside": list(self.set_aside)}


def _budget_order(entry: AllowlistEntry) -> tuple[int, bool, int, str]:
    """Narrowest first; then the older ``created_at`` (an entry without one last); then the id."""
    return _BudgetTally().cost_with(entry), entry.created_at is None, entry.created_at or 0, entry.id


@dataclass(slots=True)
class Allowlist:
    """The usable entries and the ones that were set aside."""

    active: list[AllowlistEntry] = dc_field(default_factory=list)
    problems: list[EntryProblem] = dc_field(default_factory=list)
    budget: AllowlistBudget = dc_field(default_factory=AllowlistBudget)
    # Entries with an ``equals``/``in`` condition on a Run Command field are indexed by that value, so an
    # alert is checked only against the entries that could match it (plus the unindexed ones).
    _index: dict[tuple[str, ...], list[int]] = dc_field(default_factory=dict, repr=False)
    _unindexed: list[int] = dc_field(default_factory=list, repr=False)

    @classmethod
    def load(cls, raws: Iterable[Mapping[str, Any]], *, now: Ticks) -> Allowlist:
        """Validate the entries; the ones that cannot suppress (see :class:`EntryProblem`) are reported.

        Every copy of an id that occurs more than once suppresses nothing (decision): a table row written under
        another RowKey can carry a reviewed entry's id, and keeping the copy listed first kept the planted one
        in force under the reviewed id whenever the table listed it first.
        """
        out = cls()
        raws = list(raws)
        counts = Counter(raw.get("id") for raw in raws if isinstance(raw, Mapping) and isinstance(raw.get("id"), str))
        for position, raw in enumerate(raws, start=1):
            raw_id = raw.get("id") if isinstance(raw, Mapping) else None
            label = raw_id if isinstance(raw_id, str) and raw_id else f"entry #{position}"
            try:
                entry = AllowlistEntry.from_dict(raw)
            except InvalidEntry as exc:
                out.problems.append(EntryProblem(label, f"invalid, suppresses nothing: {exc}", "invalid"))
                continue
            if counts[entry.id] > 1:
                out.problems.append(EntryProblem(label, f"duplicate id ({counts[entry.id]} entries carry it), "
                                                        "suppresses nothing", "duplicate"))
                continue
            if not entry.enabled:
                out.problems.append(EntryProblem(entry.id, "disabled", "disabled"))
            elif entry.is_expired(now):
                out.problems.append(EntryProblem(
                    entry.id, f"expired at {format_datetime(entry.expires_at or 0)}, suppresses nothing", "expired"))
            else:
                out.active.append(entry)
        out._keep_within_budget()
        out._build_index()
        return out

    def _keep_within_budget(self) -> None:
        """Set aside the broadest active entries until the rest together match at most the budget."""
        kept, requested = _BudgetTally(), _BudgetTally()
        set_aside: dict[str, None] = {}  # in the order they were set aside
        for entry in sorted(self.active, key=_budget_order):
            requested.add(entry)
            cost = kept.cost_with(entry)
            if cost <= BUDGET_MATCHES * _UNITS:
                kept.add(entry)
                continue
            set_aside[entry.id] = None
            own, before = _BudgetTally().cost_with(entry), kept.cost()
            self.problems.append(EntryProblem(entry.id, (
                f"over the allowlist budget, suppresses nothing: it matches {_in_alerts(own)} breadth-corpus "
                f"alert(s) (a caller-IP range by its share of the address space), {_in_alerts(cost - before)} of "
                f"them beyond the {_in_alerts(before)} that the narrower entries kept in force match; all entries "
                f"together may match at most {BUDGET_MATCHES} of the {CORPUS_SIZE} ({BUDGET_SHARE:.0%})"),
                "over_budget"))
        self.active = [e for e in self.active if e.id not in set_aside]
        self.budget = AllowlistBudget(matched=_in_alerts(kept.cost()), requested=_in_alerts(requested.cost()),
                                      set_aside=tuple(set_aside))

    def _build_index(self) -> None:
        self._index.clear()
        self._unindexed.clear()
        for position, entry in enumerate(self.active):
            keys = _index_keys(entry)
            if keys is None:
                self._unindexed.append(position)
            for key in keys or ():
                self._index.setdefault(key, []).append(position)

    def matching(self, alert: Alert) -> list[str]:
        """Ids of the active entries that suppress ``alert`` (empty: deliver it), in allowlist order."""
        if len(self._index) + len(self._unindexed) == 0 and self.active:
            self._build_index()  # built by hand rather than by load()
        candidates = set(self._unindexed)
        for name in _INDEXABLE:
            [value] = _ALERT_FIELDS[name](alert)
            candidates.update(self._index.get((name, kql.tolower(value)), ()))
        parsed = _address(alert.caller_ip)
        if parsed is not None:
            version, number = parsed
            width = 32 if version == 4 else 128
            for bits in _CIDR_BUCKETS[version]:
                candidates.update(self._index.get(("cidr", str(version), f"{bits}:{number >> (width - bits)}"), ()))
        return [self.active[i].id for i in sorted(candidates) if self.active[i].matches(alert)]


def budget_refusal(raws: Sequence[Mapping[str, Any]], entry: AllowlistEntry, *, now: Ticks) -> str | None:
    """Why saving ``entry`` (in place of any entry with its id) would break the allowlist's budget; None when
    it fits. Refused when the entry would be set aside, or would push an entry now in force out of force."""
    others = [raw for raw in raws if raw.get("id") != entry.id]
    before = Allowlist.load(others, now=now)
    after = Allowlist.load([*others, entry.to_dict()], now=now)
    pushed = [i for i in after.budget.set_aside if i not in before.budget.set_aside]
    if not pushed:
        return None
    mine = _corpus_matches(entry.conditions)
    own = f"{_in_alerts(_BudgetTally().cost_with(entry))}" + (
        " (a caller-IP range by its share of the address space)" if _address_weights(entry.conditions) else "")
    overlaps = [(e.id, n) for e in before.active if (n := len(mine & _corpus_matches(e.conditions)))]
    shared = f", {len(mine - _corpus_union(before.active))} of them matched by no entry in force" + (
        f" (it overlaps {', '.join(f'{i} on {n}' for i, n in overlaps[:10])}"
        f"{f' and {len(overlaps) - 10} more' if len(overlaps) > 10 else ''})" if overlaps else "")
    others_out = [i for i in pushed if i != entry.id]
    effect = " and ".join([*(["it would be set aside"] if entry.id in pushed else []),
                           *([f"it would push {', '.join(others_out)} out of force"] if others_out else [])])
    return (f"over the allowlist budget: all entries in force together may match at most {BUDGET_MATCHES} of the "
            f"{CORPUS_SIZE} breadth-corpus alerts ({BUDGET_SHARE:.0%}); the {len(before.active)} entries in force "
            f"match {before.budget.matched}; this entry matches {own}{shared}; {effect}. Narrow it (e.g. add "
            "a caller or VM condition) or remove entries it overlaps")


def _corpus_union(entries: Iterable[AllowlistEntry]) -> frozenset[int]:
    return frozenset().union(*(_corpus_matches(e.conditions) for e in entries))


# Prefix lengths an alert's IP is looked up by: a CIDR condition is indexed at the longest of these
# that its every network covers (a /20 under its /16, a /12 under its /8).
_CIDR_BUCKETS = {4: (16, 8), 6: (48, 32, 16)}


def _index_keys(entry: AllowlistEntry) -> list[tuple[str, ...]] | None:
    """Keys an entry is found by; None when it must be checked against every alert."""
    for c in entry.conditions:
        if c.operator in ("equals", "in") and c.field_name in _INDEXABLE:
            values = c.value if isinstance(c.value, tuple) else (c.value,)
            return [(c.field_name, v) for v in {kql.tolower(v) for v in values}]
    for c in entry.conditions:
        if c.operator == "cidr" and c.field_name == "caller_ip" and isinstance(c.value, str):
            keys: list[tuple[str, ...]] = []
            for part in c.value.split(","):
                network = ipaddress.ip_network(part.strip(), strict=False)
                width = 32 if network.version == 4 else 128
                bits = next((b for b in _CIDR_BUCKETS[network.version] if network.prefixlen >= b), None)
                if bits is None:
                    break  # too wide to bucket: check against every alert
                keys.append(("cidr", str(network.version), f"{bits}:{int(network.network_address) >> (width - bits)}"))
            else:
                return keys
    return None


@dataclass(frozen=True, slots=True)
class Suppression:
    alert: Alert
    entry_ids: tuple[str, ...]


def apply(allowlist: Allowlist, alerts: Sequence[Alert]) -> tuple[list[Alert], list[Suppression]]:
    """Split alerts into those to deliver and those suppressed (with the entries that matched)."""
    keep: list[Alert] = []
    suppressed: list[Suppression] = []
    for alert in alerts:
        ids = allowlist.matching(alert)
        if ids:
            suppressed.append(Suppression(alert, tuple(ids)))
        else:
            keep.append(alert)
    return keep, suppressed
