"""Configs: overrides, method sections, backbone arguments, variants, configs from before the registries."""

from __future__ import annotations

from pathlib import Path

import pytest

from geot.config import Config, config_dict, load_config, parse_overrides, read_variant
from geot.errors import ConfigError
from geot.method.geot import GeoTSettings

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_overrides_are_yaml_values():
    assert parse_overrides(["optim.epochs=180", "geot.idtm=false", "semi.method=fixmatch", "x=0.2",
                            'modules=[{"name": "elr"}]', "model.args.channels=[16, 32]"]) == {
        "optim.epochs": 180, "geot.idtm": False, "semi.method": "fixmatch", "x": 0.2,
        "modules": [{"name": "elr"}], "model.args.channels": [16, 32]}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["optim.epochs"])


def test_method_sections_are_validated_by_their_method():
    cfg = load_config(overrides={"geot.plgr_weight": 0.5})
    assert isinstance(cfg.geot, GeoTSettings) and cfg.geot.plgr_weight == 0.5 and cfg.section("geot") is cfg.geot
    assert load_config().geot == GeoTSettings()  # absent sections take their defaults
    with pytest.raises(ConfigError, match="geot.plgr_wieght"):
        load_config(overrides={"geot.plgr_wieght": 0.5})
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(overrides={"fixmatchh.threshold": 0.5})
    with pytest.raises(ConfigError, match="unknown method 'meanteacher'; available: fixmatch, geot, mean_teacher"):
        load_config(overrides={"semi.method": "meanteacher"})


def test_config_round_trips_through_its_saved_form():
    cfg = load_config(overrides={"geot.clgs_weight": 0.2, "model.name": "dgcnn", "model.args.k": 8})
    again = Config.model_validate(config_dict(cfg))
    assert again == cfg and again.model.args["k"] == 8 and again.geot.clgs_weight == 0.2


def test_flat_model_keys_of_older_configs_move_into_args():
    old = {"backbone": "point_transformer", "channels": [16, 32], "k": 8, "ratio": 0.25, "sampling": "fps",
           "global_context": True, "global_channels": 512, "dropout": 0.1}
    with pytest.raises(ConfigError, match="global_channels"):  # a dgcnn-only key on a point transformer
        load_config(overrides={"model": old})
    del old["global_channels"]
    cfg = load_config(overrides={"model": old})
    assert cfg.model.name == "point_transformer" and cfg.model.dropout == 0.1
    assert cfg.model.args["channels"] == [16, 32] and cfg.model.args["sampling"] == "fps"
    # a flat override (what `--set model.sampling=random` gives) wins over the file's args
    cfg = load_config(CONFIGS / "gpu-full.yaml", {"model.sampling": "random"})
    assert cfg.model.args["sampling"] == "random" and cfg.model.args["channels"] == [64, 128, 256, 512]


def test_variants_lay_over_a_config(tmp_path):
    overrides = read_variant(CONFIGS / "variants" / "geot-paper.yaml")
    assert overrides == {"semi.method": "geot", "geot.plgr_weight": 0.1, "geot.clgs_weight": 0.1}
    cfg = load_config(CONFIGS / "cpu-small.yaml", overrides)
    assert cfg.geot.plgr_weight == 0.1 and cfg.geot.clgs_weight == 0.1 and cfg.data.num_points == 4096
    # the paper's PLGR and CLGS are a variant: default geot leaves both off (they measured nothing on the test jaws)
    default = load_config(CONFIGS / "cpu-small.yaml", {"semi.method": "geot"}).geot
    assert default.plgr_weight == 0.0 and default.clgs_weight == 0.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        read_variant(bad)


@pytest.mark.parametrize("variant", sorted((CONFIGS / "variants").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_variant_builds_its_method_over_both_configs(variant):
    from geot.method import build_method

    for base in ("cpu-small.yaml", "gpu-full.yaml"):
        cfg = load_config(CONFIGS / base, read_variant(variant))
        assert build_method(cfg).name == cfg.semi.method == "geot"
