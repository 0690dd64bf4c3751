"""Unit names, unit file parsing, [X-Fleet] requirements, specifiers and rejections."""

from __future__ import annotations

import pytest
from flotilla.daemons.fleet import model
from flotilla.daemons.fleet.model import Requirements, UnitError, UnitOption


def xfleet(*pairs: tuple[str, str]) -> list[UnitOption]:
    return [UnitOption("Service", "ExecStart", "/bin/true")] + [
        UnitOption("X-Fleet", key, value) for key, value in pairs
    ]


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("hello.service", ("hello", "", "service", False, False)),
        ("web@1.service", ("web", "1", "service", False, True)),
        ("web@.service", ("web", "", "service", True, False)),
        ("a:b_c-d.e.socket", ("a:b_c-d.e", "", "socket", False, False)),  # last dot types
        ("x.timer", ("x", "", "timer", False, False)),
        ("m.mount", ("m", "", "mount", False, False)),
        ("d.device", ("d", "", "device", False, False)),
        ("s.slice", ("s", "", "slice", False, False)),
        ("w@x.target", ("w", "x", "target", False, True)),
        ("esc\\x2d.service", ("esc\\x2d", "", "service", False, False)),
        ("a" * 248 + ".service", ("a" * 248, "", "service", False, False)),  # 256: the limit
    ],
)
def test_valid_names_are_accepted_and_parsed(name: str, parts: tuple) -> None:
    """Accepted, and read as (prefix, instance, type, template?, instance?)."""
    assert model.validate_name(name) is None
    parsed = model.parse_name(name)
    assert (parsed.prefix, parsed.instance, parsed.unit_type, parsed.is_template,
            parsed.is_instance) == parts
    assert parsed.full == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "cannot be empty"),
        ("hello", 'must contain "."'),
        ("hello.", 'cannot end in "."'),
        ("hello.bogus", 'invalid unit type: "bogus"'),
        ("hel lo.service", "invalid character ' '"),
        ("hel/lo.service", "invalid character '/'"),
        ("@foo.service", 'cannot start in "@"'),
        (".service", "must have a name"),
        ("a" * 249 + ".service", "maximum length (256)"),  # 257: one past the limit
        ("dev@1.device", "cannot be a template"),
        ("sw@.swap", "cannot be a template"),
    ],
)
def test_invalid_names_are_rejected_with_reason(name: str, message: str) -> None:
    with pytest.raises(UnitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model.validate_name(name)


def test_parse_name_parts_for_instance_template_and_plain() -> None:
    inst = model.parse_name("web@8080.service")
    assert (inst.prefix, inst.instance, inst.unit_type, inst.stem) == (
        "web", "8080", "service", "web@8080")
    assert inst.is_instance and not inst.is_template
    assert inst.template == "web@.service"
    tmpl = model.parse_name("web@.service")
    assert tmpl.is_template and not tmpl.is_instance
    plain = model.parse_name("db.service")
    assert (plain.prefix, plain.instance, plain.is_template) == ("db", "", False)


def test_specifiers_expand_name_prefix_instance() -> None:
    name = "web@3.service"
    assert model.expand_specifiers("%n|%N|%p|%i|%%|%x", name) == (
        "web@3.service|web@3|web|3|%|%x")
    assert model.expand_specifiers("%p-%i", "db.service") == "db-"


UNIT_TEXT = """# comment
[Unit]
Description=Hello
; another comment

[Service]
ExecStart=/bin/sh -c \\
  "echo hi"
Environment=A=1
Environment=B=2

[X-Fleet]
Conflicts=hello*
"""


def test_parse_unit_file_keeps_order_repeats_and_continuations() -> None:
    options = model.parse_unit_file(UNIT_TEXT)
    assert options == [
        UnitOption("Unit", "Description", "Hello"),
        UnitOption("Service", "ExecStart", '/bin/sh -c    "echo hi"'),
        UnitOption("Service", "Environment", "A=1"),
        UnitOption("Service", "Environment", "B=2"),
        UnitOption("X-Fleet", "Conflicts", "hello*"),
    ]
    assert model.description(options) == "Hello"


def test_serialize_groups_sections_and_hash_is_stable() -> None:
    options = [UnitOption("Unit", "A", "1"), UnitOption("Service", "B", "2"),
               UnitOption("Unit", "C", "3")]
    text = model.serialize_options(options)
    assert text == "[Unit]\nA=1\nC=3\n\n[Service]\nB=2\n"
    assert model.unit_hash(options) == model.unit_hash(model.parse_unit_file(text))
    assert len(model.unit_hash(options)) == 40
    assert model.unit_hash(options) != model.unit_hash(options[:2])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Key=value\n", "line 1: option outside"),
        ("[Unit]\nnot an option\n", "line 2: expected Key=Value"),
        ("[Unit\nA=1\n", "line 1: malformed section"),
        ("[Unit]\n=x\n", "line 2: empty option name"),
        ("[Unit]\nA=" + "x" * 3000 + "\n", "line 2: longer than 2048"),
        ("[Unit]\nA=b\\\n", "continuation at end"),
    ],
)
def test_bad_unit_files_name_the_line(text: str, message: str) -> None:
    with pytest.raises(UnitError, match=message):
        model.parse_unit_file(text)


def test_options_from_json_names_bad_element() -> None:
    good = model.options_from_json([{"section": "Unit", "name": "A", "value": "b"}])
    assert good == [UnitOption("Unit", "A", "b")]
    with pytest.raises(UnitError, match=r"options\[1\]\.value"):
        model.options_from_json([{"section": "U", "name": "A", "value": ""},
                                 {"section": "U", "name": "A", "value": 3}])
    with pytest.raises(UnitError, match="must be a list"):
        model.options_from_json({"section": "U"})
    with pytest.raises(UnitError, match=r"options\[0\]: must be an object"):
        model.options_from_json(["x"])


def test_options_from_json_takes_a_missing_value_as_empty() -> None:
    """fleetctl 1.0's Go client leaves empty fields out: ``ExecStartPre=`` comes as
    ``{"name":"ExecStartPre","section":"Service"}``, as fleet's decoder reads it."""
    assert model.options_from_json([{"section": "Service", "name": "ExecStartPre"},
                                    {"section": "Service", "name": "X", "value": None}]) == [
        UnitOption("Service", "ExecStartPre", ""), UnitOption("Service", "X", "")]
    with pytest.raises(UnitError, match=r"options\[0\]\.name"):
        model.options_from_json([{"section": "Service", "value": "x"}])


def test_multivalue_split_only_when_quoted_both_ends() -> None:
    assert model.split_multivalue('"a=b" "c=d"') == ["a=b", "c=d"]
    assert model.split_multivalue("a=b c=d") == ["a=b c=d"]
    assert model.split_multivalue('"a=b') == ['"a=b']


def test_requirements_read_every_key_and_aliases() -> None:
    req = model.requirements("x@1.service", xfleet(
        ("X-ConditionMachineID", "abc"), ("MachineID", "later"),
        ("X-ConditionMachineOf", "db.service"), ("MachineOf", "cache.service"),
        ("MachineMetadata", '"region=us-east" "job=foo"'),
        ("X-ConditionMachineMetadata", "region=us-west"),
        ("MachineMetadata", "bad"), ("MachineMetadata", "=x"), ("MachineMetadata", "k="),
        ("X-Conflicts", "a.service b*"), ("Conflicts", "c.service"),
        ("Replaces", "old@%i.service"),
    ))
    assert req.machine_id == "abc"  # first value wins
    assert req.machine_of == ("db.service", "cache.service")
    assert req.metadata == {"region": frozenset({"us-east", "us-west"}),
                            "job": frozenset({"foo"})}
    assert req.conflicts == ("a.service", "b*", "c.service")
    assert req.replaces == ("old@1.service",)
    assert not req.is_global


@pytest.mark.parametrize(("values", "expected"), [
    (["true"], True), (["YES"], True), (["1"], True), (["on"], True), (["t"], True),
    (["false"], False), (["true", "no"], False), (["no", "true"], True), (["maybe"], False),
])
def test_global_truthiness_last_value_wins(values: list[str], expected: bool) -> None:
    req = model.requirements("g.service", xfleet(*[("Global", v) for v in values]))
    assert req.is_global is expected


def test_specifiers_expand_inside_xfleet_values() -> None:
    req = model.requirements("web@7.service", xfleet(
        ("MachineMetadata", "hostname=%i"), ("Conflicts", "%p@*.service"),
        ("MachineOf", "db@%i.service")))
    assert req.metadata == {"hostname": frozenset({"7"})}
    assert req.conflicts == ("web@*.service",)
    assert req.machine_of == ("db@7.service",)


def test_unknown_xfleet_key_is_rejected() -> None:
    message = 'unrecognized requirement in \\[X-Fleet\\] section: "Bogus"'
    with pytest.raises(UnitError, match=message):
        model.validate_unit("a.service", xfleet(("Bogus", "1")))


REJECTED = [
    ([("MachineID", "m1"), ("MachineOf", "b.service")], "MachineID cannot be used with MachineOf"),
    ([("MachineID", "m1"), ("Conflicts", "b*")], "MachineID cannot be used with Conflicts"),
    ([("MachineID", "m1"), ("Global", "true")], "MachineID cannot be used with Global"),
    ([("MachineID", "m1"), ("Replaces", "b*")], "MachineID cannot be used with Replaces"),
    ([("Global", "true"), ("MachineOf", "b.service")], "Global cannot be used with MachineOf"),
    ([("Global", "true"), ("Replaces", "b*")], "Global cannot be used with Replaces"),
    ([("Conflicts", "b*"), ("Replaces", "c*")], "Conflicts cannot be used with Replaces"),
    ([("MachineOf", "b.service"), ("Conflicts", "b*")],
     'peer "b.service" matches conflict "b\\*"'),
    ([("MachineOf", "b.service"), ("Replaces", "b.service")],
     'peer "b.service" matches replace "b.service"'),
]


@pytest.mark.parametrize(("pairs", "message"), REJECTED)
def test_rejected_combinations(pairs: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(UnitError, match=message):
        model.validate_unit("a.service", xfleet(*pairs))


ACCEPTED = [
    ([("Global", "true"), ("MachineMetadata", "role=web"), ("Conflicts", "x*")],
     Requirements(metadata={"role": frozenset({"web"})}, conflicts=("x*",), is_global=True)),
    ([("MachineOf", "b.service"), ("MachineMetadata", "a=b")],
     Requirements(machine_of=("b.service",), metadata={"a": frozenset({"b"})})),
    ([("MachineID", "m1"), ("MachineMetadata", "a=b")],
     Requirements(machine_id="m1", metadata={"a": frozenset({"b"})})),
    # Global=false is no Global at all, so MachineOf may go with it.
    ([("Global", "false"), ("MachineOf", "b.service")],
     Requirements(machine_of=("b.service",))),
    ([("Replaces", "b*"), ("MachineOf", "c.service")],
     Requirements(machine_of=("c.service",), replaces=("b*",))),
]


@pytest.mark.parametrize(("pairs", "expected"), ACCEPTED)
def test_allowed_combinations_give_their_requirements(pairs: list[tuple[str, str]],
                                                      expected: Requirements) -> None:
    assert model.validate_unit("a.service", xfleet(*pairs)) == expected


def test_unit_without_options_is_rejected() -> None:
    with pytest.raises(UnitError, match="no options"):
        model.validate_unit("a.service", [])


@pytest.mark.parametrize(("pattern", "name", "expected"), [
    ("hello*", "hello.service", True), ("hello*", "ahello.service", False),
    ("web@?.service", "web@1.service", True), ("web@?.service", "web@10.service", False),
    ("web@[0-4].service", "web@3.service", True), ("web@[^0-4].service", "web@3.service", False),
    ("web@[!0-4].service", "web@7.service", True), ("a\\*.service", "a*.service", True),
    ("a\\*.service", "ab.service", False), ("*", "x/y", False), ("[", "[", True),
])
def test_glob_semantics(pattern: str, name: str, expected: bool) -> None:
    assert model.glob_match(pattern, name) is expected


def test_metadata_config_parsing() -> None:
    assert model.parse_metadata(' region=us-east , "disk"="ssd",region=eu ') == {
        "region": "eu", "disk": "ssd"}
    assert model.parse_metadata("") == {}
    with pytest.raises(UnitError, match="not key=value"):
        model.parse_metadata("novalue")
