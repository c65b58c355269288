"""The rule's data matches the seed text it reproduces."""

from pathlib import Path

from detector.rule import RULE

FIXTURE = Path(__file__).parent / "fixtures" / "seed_rule.txt"
SHARED = Path(__file__).parents[2] / "shared" / "seed" / "000_ba7a0f048421b126.txt"


def seed_query(text: str) -> str:
    return text.split("query: |\n", 1)[1].split("entityMappings:", 1)[0]


def test_query_is_the_seed_query_verbatim() -> None:
    assert RULE.query == seed_query(FIXTURE.read_text(encoding="utf-8"))


def test_vendored_seed_matches_shared_copy_when_present() -> None:
    # CI lays shared/ beside the clone; a laptop clone may not have it, and then the vendored copy stands.
    if SHARED.is_file():
        assert SHARED.read_text(encoding="utf-8") == FIXTURE.read_text(encoding="utf-8")


def test_metadata() -> None:
    text = FIXTURE.read_text(encoding="utf-8")
    assert f"id: {RULE.id}" in text
    assert f"name: {RULE.name}" in text
    assert f"severity: {RULE.severity}" in text
    assert (RULE.query_frequency_hours, RULE.query_period_hours) == (24, 48)
    assert RULE.tactics == ("LateralMovement", "CredentialAccess")
    assert RULE.techniques == ("T1570", "T1212")
