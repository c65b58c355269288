"""Table-driven cases for each KQL semantic the rule uses (field notes + Kusto docs)."""

import pytest

from detector import kql


@pytest.mark.parametrize(("left", "right", "expected"), [
    ("MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION", "microsoft.compute/virtualmachines/runcommand/action", True),
    ("Microsoft.Compute/virtualMachines/runCommand/action", "MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION", True),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION ", "MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION", False),
    ("MICROSOFT.COMPUTE/VIRTUALMACHINESCALESETS/VIRTUALMACHINES/RUNCOMMAND/ACTION",
     "MICROSOFT.COMPUTE/VIRTUALMACHINES/RUNCOMMAND/ACTION", False),
    ("", "", True),
    ("abc", "ABC", True),
    ("straße", "STRASSE", False),  # one-to-one case mapping only
])
def test_equals_ci(left: str, right: str, expected: bool) -> None:
    assert kql.equals_ci(left, right) is expected


@pytest.mark.parametrize(("haystack", "needle", "expected"), [
    ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1", "virtualMachines", True),
    ("/subscriptions/s/providers/Microsoft.Compute/virtualMachineScaleSets/ss", "virtualMachines", False),
    ('{"scope":"/x/VIRTUALMACHINES/vm"}', "virtualMachines", True),  # case-insensitive
    ("virtualMachines", "virtualMachines", True),
    ("myvirtualMachines", "virtualMachines", False),
    ("virtualMachines2", "virtualMachines", False),
    ("virtualMachines_x", "virtualMachines", True),  # '_' is not alphanumeric
    ("Kusto: ad67d136-c1db;KustoExplorerQueryRun", "Explorer", False),
    ("Kusto: ad67d136-c1db;KustoExplorerQueryRun", "KustoExplorerQueryRun", True),
    ("North America", "america", True),
    ("", "virtualMachines", False),
    ("a/b/c", "b/c", True),  # a phrase on term boundaries
    ("a/bb/c", "b/c", False),
    ("anything", "", False),
])
def test_has(haystack: str, needle: str, expected: bool) -> None:
    assert kql.has(haystack, needle) is expected


@pytest.mark.parametrize(("values", "expected"), [
    (["Started", "Accepted", "Succeeded"], True),
    (["Start", "Accept", "Success"], True),
    (["Started", "Accepted", "Failed"], False),
    (["Started", "Rejected"], False),
    (["Successful"], False),
    (["succeeded"], True),  # case-insensitive
    (["Not Succeeded"], True),  # a term of the element
    (["Success-ish"], True),
    ([""], False),
    ([], False),
    (["Started\nSucceeded"], False),  # JSON text holds "\nSucceeded": the term is "nSucceeded"
])
def test_has_any_on_a_list(values: list[str], expected: bool) -> None:
    assert kql.has_any(values, ("Success", "Succeeded")) is expected


@pytest.mark.parametrize(("value", "expected"), [
    ("", [""]),
    ("a//b", ["a", "", "b"]),
    ("/subscriptions/s/x", ["", "subscriptions", "s", "x"]),
    (None, [""]),
    (5, ["5"]),
    ({"a": "b/c"}, ['{"a":"b', 'c"}']),
])
def test_split(value: object, expected: list[str]) -> None:
    assert kql.split(value, "/") == expected


@pytest.mark.parametrize(("items", "index", "expected"), [
    (["a", "b", "c"], 0, "a"), (["a", "b", "c"], -1, "c"), (["a", "b", "c"], 2, "c"),
    (["a", "b", "c"], 3, None), (["a", "b", "c"], -4, None), ([""], 2, None), ([""], -1, ""),
])
def test_array_index(items: list[str], index: int, expected: str | None) -> None:
    assert kql.at(items, index) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (None, ""), ("x", "x"), (True, "true"), (False, "false"), (3, "3"), (2.0, "2"), (2.5, "2.5"),
    ({"b": 1, "a": [1, "x"]}, '{"b":1,"a":[1,"x"]}'), ("é", "é"),
])
def test_tostring(value: object, expected: str) -> None:
    assert kql.tostring(value) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ('{"scope":"/a/b"}', {"scope": "/a/b"}),
    ("not json", "not json"),
    ('{"scope": ', '{"scope": '),
    ("[1,2]", [1, 2]),
    ('"text"', "text"),
])
def test_parse_json(text: str, expected: object) -> None:
    assert kql.parse_json(text) == expected


def test_member_is_case_sensitive_and_null_safe() -> None:
    assert kql.member({"scope": "x"}, "scope") == "x"
    assert kql.member({"Scope": "x"}, "scope") is None
    assert kql.member("text", "scope") is None
    assert kql.member([1], "scope") is None
    assert kql.member(None, "scope") is None


@pytest.mark.parametrize(("value", "low", "high", "expected"), [
    (5, 5, 10, True), (10, 5, 10, True), (4, 5, 10, False), (11, 5, 10, False),
    (None, 5, 10, False), (5, None, 10, False), (5, 5, None, False),
])
def test_between_is_inclusive(value: int | None, low: int | None, high: int | None, expected: bool) -> None:
    assert kql.between(value, low, high) is expected


@pytest.mark.parametrize(("value", "expected"), [("", False), (None, False), (" ", True), ("x", True)])
def test_isnotempty(value: str | None, expected: bool) -> None:
    assert kql.isnotempty(value) is expected


@pytest.mark.parametrize(("values", "expected"), [
    (["10.0.0.9", "10.0.0.10"], "10.0.0.9"),  # ordinal, not numeric
    (["", "1.2.3.4"], "1.2.3.4"),
    ([], ""),
    (["", ""], ""),
    (["a", "B"], "a"),  # ordinal: 'a' (0x61) > 'B' (0x42)
    (["\uffff", "\U0001F600"], "\uffff"),  # UTF-16 order: U+FFFF > the surrogate pair D83D...
])
def test_max_string_ordinal(values: list[str], expected: str) -> None:
    assert kql.max_string(values) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("Henry.Ops@Contoso.COM", "henry.ops@contoso.com"), ("", ""), ("ÉLISE@x.fr", "élise@x.fr"),
])
def test_tolower(value: str, expected: str) -> None:
    assert kql.tolower(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("True", True), ("true", False), ("TRUE", False), (True, False), ("False", False), (None, False), (1, False),
])
def test_dynamic_equals_true(value: object, expected: bool) -> None:
    assert kql.dynamic_equals(value, "True") is expected


def test_the_ascii_twins_table_is_every_character_that_folds_to_an_ascii_letter() -> None:
    found: dict[str, str] = {}
    for cp in range(0x80, 0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        up = kql._fold(chr(cp))
        if up.isascii() and up.isalpha():
            found[up] = found.get(up, "") + chr(cp)
    assert found == kql.ASCII_TWINS
    assert kql.case_twins("extensions") == "\u017f\u0131"  # s before i, as the word has them
    assert kql.case_twins("runcommand") == ""
    assert kql.equals_ci("EXTEN\u017f\u0131ONS", "extensions")
