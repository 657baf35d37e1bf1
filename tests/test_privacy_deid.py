"""pyaiml.privacy.deidentify: what it replaces, what it keeps on purpose, and the structures
it takes (text, token lists, corpora of either)."""
import pytest

from pyaiml.privacy import deidentify


@pytest.mark.parametrize("text,want", [
    ("write to john.doe+news@mail.example.co.uk today", "write to <EMAIL> today"),
    ("call +44 20 7946 0958 now", "call <PHONE> now"),
    ("call (555) 123-4567 or 555.123.4567", "call <PHONE> or <PHONE>"),
    ("card 4111 1111 1111 1111 expires", "card <NUMBER> expires"),
    ("account 12345678, ref 00123456789", "account <NUMBER>, ref <NUMBER>"),
    ("tel 0044 161 496 0000", "tel <PHONE>"),
])
def test_replaces_contacts_and_long_numbers(text, want):
    assert deidentify(text) == want


@pytest.mark.parametrize("text", [
    "In 1999 it cost 12.50 for 3 items", "ref 12345 on 2024-01-15 or 15.01.2024", "pi is 3.14159",
    "version 1.2.3", "192.168.1.1", "no digits at all", "user@localhost is not an address",
])
def test_keeps_short_numbers_dates_and_plain_text(text):
    assert deidentify(text) == text


def test_structures_and_counts():
    corpus = [["mail", "a@b.io", "or", "5551234567"], "call (555) 123-4567"]
    out, n = deidentify(corpus, return_counts=True)
    assert out == [["mail", "<EMAIL>", "or", "<NUMBER>"], "call <PHONE>"]
    assert n == {"<EMAIL>": 1, "<NUMBER>": 1, "<PHONE>": 1}
    assert deidentify(iter(["x 1234567"]), min_digits=7) == ["x <NUMBER>"]
    assert deidentify("x 1234567", min_digits=8) == "x 1234567"


def test_bad_arguments():
    with pytest.raises(ValueError, match="deidentify: min_digits must be an integer >= 3. Received 2"):
        deidentify("x", min_digits=2)
    with pytest.raises(TypeError, match="deidentify: text must be str.*Received an item of type int"):
        deidentify([["a", 3]])
