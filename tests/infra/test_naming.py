"""infra/_naming.py: names that fit each cloud's rules and stay stable."""

from __future__ import annotations

import re

from infra._naming import alnum_name, dns_label


def test_dns_label_keeps_short_names_readable():
    assert dns_label("spotshift-gcp-source", 30) == "spotshift-gcp-source"
    assert dns_label("Spot_Shift--API", 63) == "spot-shift-api"


def test_dns_label_shortens_long_names_with_a_distinguishing_hash():
    first = dns_label("spotshift-" + "a" * 40 + "-one", 30)
    second = dns_label("spotshift-" + "a" * 40 + "-two", 30)

    assert len(first) == len(second) == 30
    assert first != second
    assert re.fullmatch(r"[a-z][a-z0-9-]*[a-z0-9]", first)


def test_dns_label_starts_with_a_letter():
    assert dns_label("1st", 10)[0].isalpha()


def test_alnum_name_is_stable_unique_and_within_azure_limits():
    name = alnum_name("spotshift", "sub/spotshift/azure-target/spotshift", 24)

    assert name == alnum_name("spotshift", "sub/spotshift/azure-target/spotshift", 24)
    assert name != alnum_name("spotshift", "other-sub/spotshift/azure-target/spotshift", 24)
    assert len(name) == 24 and name.isalnum() and name == name.lower()
    assert name.startswith("spotshift")
