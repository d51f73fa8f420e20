"""The owner's network allow-list: FARMHAND_ALLOW_NETWORKS, the config file, --allow-networks,
and `farmhand run` putting it in force for every web download of the process."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from farmhand import cli, loop, netguard
from farmhand.config import ConfigError, load_config


def test_nothing_but_the_internet_is_allowed_by_default(tmp_path):
    config = load_config({"state_dir": str(tmp_path)}, env={}, read_token=False)
    assert config.allow_networks == ()


def test_networks_come_from_the_environment_the_file_and_flags(tmp_path):
    config_file = tmp_path / "farmhand.toml"
    config_file.write_text('allow_networks = ["192.168.1.20", "fd00::/8"]\n')
    base = {"config": str(config_file), "state_dir": str(tmp_path)}

    from_file = load_config(base, env={}, read_token=False)
    from_env = load_config(base, env={"FARMHAND_ALLOW_NETWORKS": "10.0.0.0/8, 192.168.1.0/24"},
                           read_token=False)  # fmt: skip
    from_flag = load_config({**base, "allow_networks": "172.16.5.5"},
                            env={"FARMHAND_ALLOW_NETWORKS": "10.0.0.0/8"}, read_token=False)  # fmt: skip

    assert from_file.allow_networks == (ip_network("192.168.1.20/32"), ip_network("fd00::/8"))
    assert from_env.allow_networks == (ip_network("10.0.0.0/8"), ip_network("192.168.1.0/24"))
    assert from_flag.allow_networks == (ip_network("172.16.5.5/32"),)


def test_a_host_name_in_the_allow_list_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(ConfigError) as refused:
        load_config({"state_dir": str(tmp_path)},
                    env={"FARMHAND_ALLOW_NETWORKS": "192.168.1.0/24,nas.local"},
                    read_token=False)  # fmt: skip
    assert str(refused.value).startswith("FARMHAND_ALLOW_NETWORKS: 'nas.local' is not an IP")


def test_farmhand_run_puts_the_allow_list_in_force(tmp_path, monkeypatch):
    seen = []
    # The claim loop is not under test: it stands still and notes the policy in force.
    monkeypatch.setattr(
        loop, "run_farmhand", lambda config: seen.append(netguard.installed_policy()) or 0
    )
    monkeypatch.setattr(cli.platform, "lower_priority", lambda: [])
    monkeypatch.setenv("FARMHAND_TOKEN", "fh-token")
    monkeypatch.delenv("FARMHAND_ALLOW_NETWORKS", raising=False)
    before = netguard.installed_policy()
    try:
        code = cli.main(["run", "--state-dir", str(tmp_path), "--cache-dir", str(tmp_path / "c"),
                         "--allow-networks", "192.168.1.20,10.1.0.0/16"])  # fmt: skip
    finally:
        netguard.install_policy(before)
    assert code == 0
    [policy] = seen
    assert policy.permits("192.168.1.20") and policy.permits("10.1.2.3")
    assert not policy.permits("192.168.1.21") and not policy.permits("127.0.0.1")
