"""collectors.decoding: msgspec structs from JSON-like objects, and errors that name the field."""

from __future__ import annotations

from typing import Literal

import msgspec
import pytest

from collectors.decoding import FieldError, Lenient, Strict, decode, exactly_one


class Port(Strict):
    port: int
    end_port: int | None = None
    protocol: Literal["TCP", "UDP"] = "TCP"


class Selector(Strict):
    match_labels: dict[str, str] = msgspec.field(default_factory=dict)


class Rule(Strict):
    from_: tuple[Selector, ...] = ()
    ports: tuple[Port, ...] = ()


class Peer(Strict):
    cidr: str | None = None
    pods: Selector | None = None


class Item(Lenient):
    name: str
    labels: dict[str, str] = msgspec.field(default_factory=dict)


def error_of(raw: object, type_: type) -> FieldError:
    with pytest.raises(FieldError) as caught:
        decode(raw, type_)
    return caught.value


def test_the_kubernetes_clients_snake_case_and_nulls_read_as_camel_case_and_absent() -> None:
    to_dict = {"_from": [{"match_labels": {"app_name": "web"}}], "ports": [{"port": 80, "end_port": None}]}

    assert decode(to_dict, Rule) == decode(
        {"from": [{"matchLabels": {"app_name": "web"}}], "ports": [{"port": 80}]}, Rule
    )


def test_the_keys_of_a_free_form_map_are_kept_and_a_null_value_in_it_is_an_error_naming_the_key() -> None:
    assert decode({"from": [{"matchLabels": {"my_key": "v"}}]}, Rule).from_[0].match_labels == {"my_key": "v"}
    error = error_of({"from": [{"match_labels": {"a": "b", "my_key": None}}]}, Rule)
    assert (error.path, error.reason) == ("from[0].matchLabels.my_key", "expected a string, got nothing")


def test_a_value_of_the_wrong_type_is_named_by_its_path_and_shown() -> None:
    error = error_of({"ports": [{"port": 80}, {"port": "http"}]}, Rule)
    assert str(error) == "ports[1].port: expected an integer, got str 'http'"
    error = error_of({"matchLabels": {"version": 1.0}}, Selector)
    assert str(error) == "matchLabels.version: expected a string, got float 1.0 (quote it in YAML)"
    assert str(error_of({"matchLabels": {1: "a"}}, Selector)) == "matchLabels: keys must be strings, got int 1"
    assert str(error_of({"ports": [{2: "a"}]}, Rule)) == "ports[0]: keys must be strings, got int 2"


def test_a_missing_unknown_or_unsupported_field_is_named_with_what_is_expected() -> None:
    assert str(error_of({"ports": [{}]}, Rule)) == "ports[0].port: is required"
    assert str(error_of({"ports": [{"port": 1, "prot": "TCP"}]}, Rule)) == (
        "ports[0].prot: unknown field (expected port, endPort, protocol)"
    )
    assert str(error_of({"ports": [{"port": 1, "protocol": "ICMP"}]}, Rule)) == (
        "ports[0].protocol: unsupported value 'ICMP' (expected TCP, UDP)"
    )
    assert str(error_of(["x"], Rule)) == "expected an object, got list ['x']"


def test_a_lenient_struct_ignores_other_fields_and_reads_null_as_absent() -> None:
    assert decode({"name": "a", "uid": "x", "labels": None}, Item) == Item(name="a")


def test_exactly_one_field_is_given() -> None:
    assert exactly_one(decode({"cidr": "10.0.0.0/8"}, Peer), "peer") == "cidr"
    with pytest.raises(FieldError, match=r"^peer: needs exactly one of cidr, pods$"):
        exactly_one(decode({}, Peer), "peer")
