"""Config loading: unknown keys, types, ranges, and the shipped YAML files."""

import glob
import os

import pytest
import yaml

from HeadNeRF.config import ConfigError, ModelConfig, TrainConfig, from_dict, load_yaml, to_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(tmp_path, data) -> str:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_unknown_key_names_the_key_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"init_lrr: unknown key; did you mean 'init_lr'"):
        load_yaml(write(tmp_path, {"init_lrr": 0.1}))


def test_unknown_nested_key(tmp_path):
    with pytest.raises(ConfigError, match=r"loss_config\.eyes: unknown key; did you mean 'loss_config\.eye'"):
        load_yaml(write(tmp_path, {"loss_config": {"eyes": 3}}))


def test_wrong_type(tmp_path):
    with pytest.raises(ConfigError, match=r"steps: expected an integer, got str"):
        load_yaml(write(tmp_path, {"steps": "ten"}))
    with pytest.raises(ConfigError, match=r"model\.featmap_size: expected an integer"):
        load_yaml(write(tmp_path, {"model": {"featmap_size": 3.5}}))


def test_int_accepted_for_float_and_ranges_checked(tmp_path):
    assert load_yaml(write(tmp_path, {"init_lr": 1})).init_lr == 1.0
    with pytest.raises(ConfigError, match="lr_decay_factor"):
        load_yaml(write(tmp_path, {"lr_decay_factor": 1.5}))
    with pytest.raises(ConfigError, match="model_name"):
        load_yaml(write(tmp_path, {"model": {"model_name": "NeRF"}}))
    with pytest.raises(ConfigError, match="power of two"):
        ModelConfig(featmap_size=32, image_size=96)


def test_vgg_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="vgg_weights_path"):
        load_yaml(write(tmp_path, {"loss_config": {"vgg": 1.0}}))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(str(tmp_path / "nope.yml"))
    bad = tmp_path / "bad.yml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(str(bad))


def test_round_trip_through_dict():
    cfg = TrainConfig()
    again = from_dict(TrainConfig, yaml.safe_load(yaml.safe_dump(to_dict(cfg))))
    assert again == cfg


def _is_training_config(path: str) -> bool:
    """config/ also holds evaluation, gaze-estimator and photo-fit configs, each loaded by its own typed class."""
    name = os.path.basename(path)
    return not (name.endswith("_evaluation.yml") or name.startswith("gaze_estimator") or name == "fitting.yml")


SHIPPED = sorted(glob.glob(os.path.join(ROOT, "config", "*.yml")))


@pytest.mark.parametrize("path", SHIPPED)
def test_shipped_configs_load(path):
    name = os.path.basename(path)
    if name.endswith("_evaluation.yml"):
        from HeadNeRF.evaluation import load_eval_config

        assert load_eval_config(path).checkpoint
    elif name.startswith("gaze_estimator"):
        from HeadNeRF.estimator.config import EstimatorConfig

        assert load_yaml(path, EstimatorConfig).model.input_size > 0
    elif name == "fitting.yml":
        from HeadNeRF.fitting import load_photo_fit_config

        assert load_photo_fit_config(path, {}).fit.steps > 0
    else:
        assert load_yaml(path).model.model_name in ("HeadNeRF", "HeadNeRF_Gaze", "GazeNeRF")


def test_one_config_per_model_name():
    names = {load_yaml(p).model.model_name for p in SHIPPED if _is_training_config(p)}
    assert names == {"HeadNeRF", "HeadNeRF_Gaze", "GazeNeRF"}


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_empty_config_is_refused_by_every_loader(tmp_path, text):
    from HeadNeRF.estimator.config import EstimatorConfig
    from HeadNeRF.evaluation.config import load_eval_config

    path = tmp_path / "empty.yml"
    path.write_text(text)
    for load in (lambda p: load_yaml(p), lambda p: load_yaml(p, EstimatorConfig), load_eval_config):
        with pytest.raises(ConfigError, match="empty config"):
            load(str(path))


def test_a_config_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "list.yml"
    path.write_text("- steps\n- 10\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_yaml(str(path))


def test_removed_keys_say_why_and_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match=r"loss_config\.gaze_functional: removed .*delete the line"):
        load_yaml(write(tmp_path, {"loss_config": {"gaze_functional": 0.0}}))
