"""stacks/_config.py: the forms a list of CIDRs may take, and the one-line errors."""

from __future__ import annotations

import pytest

from stacks._config import ConfigError, read_bool, read_cidr_list, read_choice, read_int
from tests.infra.pulumi_mocks import set_config


@pytest.mark.parametrize(
    "value",
    [["203.0.113.0/24", "198.51.100.7"], '["203.0.113.0/24", "198.51.100.7"]', "203.0.113.0/24, 198.51.100.7"],
)
def test_cidr_list_accepts_yaml_json_or_commas(mocks, value):
    set_config({"spotshift:allowedCidrs": value})

    assert read_cidr_list("spotshift:allowedCidrs") == ["203.0.113.0/24", "198.51.100.7/32"]


def test_cidr_list_drops_duplicates_and_blanks(mocks):
    set_config({"spotshift:allowedCidrs": ["10.0.0.0/8", "", "10.0.0.0/8"]})

    assert read_cidr_list("spotshift:allowedCidrs") == ["10.0.0.0/8"]


def test_unset_keys_take_the_declared_defaults(mocks):
    set_config({})

    assert read_cidr_list("spotshift:allowedCidrs") == []
    assert read_int("spotshift:workerCount", 0, 1000) == 2
    assert read_bool("spotshift:grantDeployerDataAccess") is True
    assert read_choice("spotshift:evictionPolicy", ("Deallocate", "Delete")) == "Deallocate"


def test_object_instead_of_list_is_refused(mocks):
    set_config({"spotshift:allowedCidrs": {"a": "10.0.0.0/8"}})

    with pytest.raises(ConfigError, match="spotshift:allowedCidrs must be a list of IPv4 CIDRs"):
        read_cidr_list("spotshift:allowedCidrs")
