"""Every declared option reaches its users: each offline tool's --help has a flag for every
option of the config it builds (generated from the declarations, help text and bounds
included), and the node has a parameter for every service and localizer option."""
import importlib

import pytest

from ros2_s2dhm.localizer import LocalizerConfig
from ros2_s2dhm.map_builder import MapBuildConfig
from ros2_s2dhm.options import option_table
from ros2_s2dhm.service import ServiceConfig
from ros2_s2dhm.training.retrieval import RetrievalConfig
from ros2_s2dhm.training.trainer import TrainConfig

TOOLS = [("build_map", MapBuildConfig), ("finetune", TrainConfig),
         ("train_retrieval", RetrievalConfig), ("evaluate", LocalizerConfig),
         ("benchmark", LocalizerConfig)]


def _help(tool, capsys) -> str:
    module = importlib.import_module(f"offline_tools.{tool}")
    with pytest.raises(SystemExit):
        module.parse_args(["--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


@pytest.mark.parametrize("tool, config_cls", TOOLS, ids=[t for t, _ in TOOLS])
def test_every_declared_option_is_a_flag(tool, config_cls, capsys):
    text = _help(tool, capsys)
    for name, opt in option_table(config_cls).items():
        flag = "--" + name.replace("_", "-")
        assert flag in text, f"{tool}: no flag {flag} for {config_cls.__name__}.{name}"
        assert " ".join(opt.help.split())[:40] in text, f"{tool} {flag}: help not the declaration's"


def test_bad_flag_values_are_refused_with_the_option_name(tmp_path, caplog, capsys):
    from offline_tools import build_map, finetune, train_retrieval

    assert build_map.main(["--dataset", str(tmp_path), "--out", str(tmp_path / "m"),
                           "--max-keypoints", "3"]) != 0
    assert "max_keypoints=3 is outside [16, inf)" in capsys.readouterr().err
    assert train_retrieval.main(["--dataset", str(tmp_path), "--out", str(tmp_path / "w.pth"),
                                 "--positive-radius", "20", "--negative-radius", "5"]) == 2
    assert "negative_radius" in caplog.text
    assert finetune.main(["--correspondences", str(tmp_path), "--images-root", str(tmp_path),
                          "--out", str(tmp_path / "run"), "--taps", "0", "9"]) == 2
    assert "taps" in capsys.readouterr().err


def test_every_service_and_localizer_option_is_a_node_parameter():
    from ros2_s2dhm.ros.parameters import PARAMETERS

    for config_cls in (ServiceConfig, LocalizerConfig):
        missing = set(option_table(config_cls)) - set(PARAMETERS)
        assert not missing, f"{config_cls.__name__} options without a node parameter: {missing}"
