"""The breadth corpus: synthetic alerts an allowlist entry is measured against before it may suppress.

An entry that matches more than :data:`MAX_SHARE` of these alerts is refused (fail closed): it
would hide a large share of real alerts too. The allowlist as a whole has a budget as well: its
active entries together may match at most :data:`BUDGET_SHARE` of the corpus, so entries that are
narrow one by one (124 entries of one IPv4 ``/7`` each) cannot add up to a silenced detector; which
entries stop suppressing when the budget is exceeded is decided in ``allowlist.py``.

The corpus is deterministic (a fixed seed) and mixes realistic values (UPNs of many tenants, VM and
resource-group names built from many words, Azure-shaped resource ids, IPv4 addresses over the whole
space, IPv6 addresses over the global unicast range 2000::/3, sign-in locations, action types) with
random text, so a condition only passes when it names something specific.

Decisions: the breadth check looks at the conditions only. A maintenance window or an expiry bounds
*when* an entry suppresses, not *what*: a broad entry with a weekend window still hides every
weekend alert, so it is refused as well. Because the corpus is generic, a value that is common only
in one tenant (its own UPN suffix or subscription id) is not recognised as broad: such a condition
needs a narrower companion by review, not by this check.
"""

from __future__ import annotations

import functools
import ipaddress
import random
import string
import uuid

from .model import Alert, RuleRow

CORPUS_SIZE = 2000
MAX_SHARE = 0.01
"""An entry may match at most this share of the corpus (20 of 2,000 alerts)."""
MAX_MATCHES = int(CORPUS_SIZE * MAX_SHARE)
BUDGET_SHARE = 0.02
"""The active entries together may match at most this share of the corpus (40 of 2,000 alerts): twice what
one entry may, so two entries at the single-entry limit fit, a flood of them does not."""
BUDGET_MATCHES = int(CORPUS_SIZE * BUDGET_SHARE)

_SEED = 20261129
_FIRST = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj",
          "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yusuf", "zoe", "amir", "bea", "chen",
          "dmitri", "eva", "fatima", "goran", "hana", "ines", "jose", "kenji", "lena", "marta", "noor", "oskar")
_WORDS = ("web", "api", "db", "sql", "app", "cfg", "patch", "backup", "build", "agent", "jump", "bastion", "dc",
          "file", "print", "mail", "proxy", "cache", "queue", "etl", "ml", "gpu", "test", "dev", "stage", "prod",
          "shared", "core", "net", "hub", "spoke", "mgmt", "sec", "log", "mon", "batch", "citrix", "sap", "erp",
          "crm", "hr", "fin", "ops", "edge", "iot", "kube", "node", "win", "linux", "ubuntu", "rhel")
_TLDS = ("com", "net", "org", "io", "de", "co.uk", "fr", "onmicrosoft.com", "gov", "edu", "ng", "jp", "br")
_CITIES = ("Seattle, US", "Redmond, US", "New York, US", "London, GB", "Dublin, IE", "Berlin, DE", "Paris, FR",
           "Lagos, NG", "Nairobi, KE", "Mumbai, IN", "Singapore, SG", "Tokyo, JP", "Sydney, AU", "São Paulo, BR",
           "Toronto, CA", "Moscow, RU", "Beijing, CN", "Dubai, AE", "Johannesburg, ZA", "Mexico City, MX",
           "Amsterdam, NL", "Stockholm, SE", "Warsaw, PL", "Madrid, ES", "Seoul, KR", "Jakarta, ID")
_ACTIONS = ("Sign-in", "ResourceAccess", "Add member to role", "Reset password", "Update user",
            "Consent to application", "Add service principal credentials", "Register device", "Update application",
            "Add owner to application", "Disable account", "Add user")
_RANDOM_CHARS = string.ascii_letters + string.digits + "-_.@/ éüßİıΣçñ中文日本語к"


def _random_text(rng: random.Random, low: int = 1, high: int = 24) -> str:
    return "".join(rng.choice(_RANDOM_CHARS) for _ in range(rng.randint(low, high)))


def _name(rng: random.Random) -> str:
    shape = rng.random()
    if shape < 0.7:
        parts = rng.sample(_WORDS, rng.randint(1, 3)) + ([f"{rng.randint(0, 999):0{rng.randint(1, 3)}d}"]
                                                          if rng.random() < 0.7 else [])
        return rng.choice(("-", "", "_")).join(parts) if rng.random() < 0.9 else "-".join(parts).upper()
    return _random_text(rng, 3, 20).replace("/", "-")


def _domain(rng: random.Random) -> str:
    return f"{rng.choice(_WORDS)}{rng.choice(_WORDS)}{rng.randint(0, 99)}.{rng.choice(_TLDS)}"


def _caller(rng: random.Random) -> str:
    shape = rng.random()
    if shape < 0.75:
        local = rng.choice((f"{rng.choice(_FIRST)}.{rng.choice(_FIRST)}", rng.choice(_FIRST),
                            f"{rng.choice(_WORDS)}.{rng.choice(_WORDS)}", f"{rng.choice(_FIRST)}{rng.randint(1, 99)}"))
        return f"{local}@{_domain(rng)}"
    if shape < 0.9:
        return str(uuid.UUID(int=rng.getrandbits(128)))  # a service principal's object id
    return _random_text(rng)


def _ip(rng: random.Random) -> str:
    shape = rng.random()
    if shape < 0.7:
        return str(ipaddress.IPv4Address(rng.getrandbits(32)))
    if shape < 0.95:
        # Global unicast (2000::/3), where every real caller's IPv6 address lives: drawn over the whole
        # 128-bit space, 7/8 of them fell where no caller is, and 2000::/5 (half the real space) passed.
        return str(ipaddress.IPv6Address(1 << 125 | rng.getrandbits(125)))
    return ""


def _alert(rng: random.Random) -> Alert:
    correlation_id = str(uuid.UUID(int=rng.getrandbits(128)))
    subscription = str(uuid.UUID(int=rng.getrandbits(128)))
    resource_group = rng.choice((f"rg-{_name(rng)}", _name(rng), f"{_name(rng)}-rg"))
    vm_name = _name(rng)
    scope = (f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/"
             f"Microsoft.Compute/virtualMachines/{vm_name}")
    caller = _caller(rng)
    account_name, _, suffix = caller.partition("@")
    start = rng.randint(1_600_000_000, 1_900_000_000) * 10_000_000
    rows = tuple(RuleRow(start=start, end=start, subscription=subscription, vm_name=vm_name, caller=caller,
                         caller_ip="", ueba_time=start - rng.randint(0, 3600) * 10_000_000,
                         ueba_action_type=rng.choice(_ACTIONS) if rng.random() < 0.8 else _random_text(rng),
                         ueba_source_location=rng.choice(_CITIES) if rng.random() < 0.7 else _random_text(rng),
                         ueba_activity_insights=None, ueba_users_insights=None, account_name=account_name,
                         account_upn_suffix=suffix, correlation_id=correlation_id, scope=scope,
                         resource_group=resource_group)
                 for _ in range(rng.randint(1, 3)))
    return Alert(key=correlation_id, rule_id="breadth-corpus", correlation_id=correlation_id, caller=caller,
                 caller_ip=_ip(rng), subscription=subscription, resource_group=resource_group, vm_name=vm_name,
                 scope=scope, start=start, end=start, account_name=account_name, account_upn_suffix=suffix,
                 rows=rows)


@functools.cache
def corpus() -> tuple[Alert, ...]:
    """The :data:`CORPUS_SIZE` alerts, built once per process (same seed, same alerts)."""
    rng = random.Random(_SEED)  # noqa: S311  # nosec B311 - a fixed synthetic corpus, not a secret
    return tuple(_alert(rng) for _ in range(CORPUS_SIZE))


ADDRESS_BLOCKS = {4: 1 << 14, 6: 1 << 12}
"""How many equal blocks the IPv4 space and 2000::/3 are cut into for :func:`address_sample`."""


@functools.cache
def address_sample() -> tuple[str, ...]:
    """One address drawn in each of :data:`ADDRESS_BLOCKS` equal blocks of the IPv4 space (a /14 each), then of
    the global unicast range 2000::/3 (a /15 each): the IPv4 ones first.

    Why: the corpus's 1,400-odd IPv4 addresses leave a quarter of the /10s empty, so an entry for such a /10
    matched no corpus alert and cost nothing, and a few hundred of them hid a quarter of the IPv4 space. Spread
    evenly, this sample has no gap wider than two blocks; the allowlist weighs a condition on the caller's IP by
    the share of it that the condition matches (see ``allowlist.py``).
    """
    rng = random.Random(_SEED + 1)  # noqa: S311  # nosec B311 - a fixed synthetic sample, not a secret
    v4_bits, v6_bits = 32 - ADDRESS_BLOCKS[4].bit_length() + 1, 125 - ADDRESS_BLOCKS[6].bit_length() + 1
    return (*(str(ipaddress.IPv4Address(block << v4_bits | rng.getrandbits(v4_bits)))
              for block in range(ADDRESS_BLOCKS[4])),
            *(str(ipaddress.IPv6Address(1 << 125 | block << v6_bits | rng.getrandbits(v6_bits)))
              for block in range(ADDRESS_BLOCKS[6])))
