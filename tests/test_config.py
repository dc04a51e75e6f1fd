"""Config schema: strict loading, overrides, round trips, and every zoo config builds its model."""

from pathlib import Path

import keras
import pytest

import keras_seg
from keras_seg.config import ConfigError
from keras_seg.config import load_config
from keras_seg.config import parse_scalar
from keras_seg.config import save_config
from keras_seg.demo import demo_config
from keras_seg.runs import build_model
from keras_seg.runs import check_config
from keras_seg.training.optimizers import variable_factors

ZOO = Path(__file__).resolve().parents[1] / "zoo_configs"
ZOO_FILES = sorted(ZOO.glob("*.yaml"))
# Configs whose models take more than a few seconds to build on CPU.
BIG = {"fcn8s_vgg16_voc2012", "deeplabv3plus_resnet101_voc2012aug"}

MINIMAL = """
name: tiny
model: {name: unet, options: {base_filters: 4, depth: 2}}
data: {name: synthetic}
train:
  batch_size: 2
"""


def _write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_zoo_has_the_required_experiments():
    names = {p.stem for p in ZOO_FILES}
    for required in [
        "fcn8s_vgg16_voc2012",
        "unet_voc2012",
        "unet_cityscapes",
        "segnet_camvid",
        "deeplabv3plus_resnet101_voc2012aug",
        "deeplabv3plus_resnet50_cityscapes",
        "deeplabv3plus_mobilenetv2_voc2012aug",
        "unet_isbi2012",
        "demo_synthetic",
    ]:
        assert required in names


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if p.stem in BIG else p for p in ZOO_FILES],
    ids=lambda p: p.stem,
)
def test_zoo_config_builds_its_pinned_parameter_count(path):
    cfg = load_config(path)
    check_config(cfg, str(path))  # names and options fit the builders
    assert cfg.name == path.stem
    assert cfg.model.expected_params, f"{path.name} must pin model.expected_params"
    cfg.model.weights = None  # no downloads in tests; the count does not depend on weights
    model = build_model(cfg, cfg.model.num_classes)
    assert model.count_params() == cfg.model.expected_params, path.name
    # every lr_multipliers pattern matches some variable (else training refuses to start)
    variable_factors(cfg.train.lr_multipliers, [v.path for v in model.trainable_variables])
    keras.backend.clear_session()


def test_zoo_recipes_follow_the_papers():
    deeplab = load_config(ZOO / "deeplabv3plus_resnet101_voc2012aug.yaml")
    assert deeplab.data.crop_size == [513, 513] and deeplab.train.batch_size == 16
    assert deeplab.train.learning_rate == 0.007 and deeplab.train.poly_power == 0.9
    assert deeplab.train.momentum == 0.9 and deeplab.train.steps == 30000
    segnet = load_config(ZOO / "segnet_camvid.yaml")
    assert len(segnet.train.class_weights) == 11
    assert segnet.train.class_weights[6] == pytest.approx(9.6446)  # SignSymbol
    cityscapes = load_config(ZOO / "deeplabv3plus_resnet50_cityscapes.yaml")
    assert cityscapes.data.crop_size == [512, 1024] and cityscapes.eval.mode == "sliding"
    for name, crop, batch in [("ade20k", 512, 16), ("cityscapes", 1024, 8)]:
        segformer = load_config(ZOO / f"segformer_b0_{name}.yaml")
        t = segformer.train
        assert segformer.data.crop_size == [crop, crop] and t.batch_size == batch
        assert (t.optimizer, t.learning_rate, t.weight_decay) == ("adamw", 6e-5, 0.01)
        assert (t.schedule, t.poly_power, t.steps, t.warmup_steps) == ("poly", 1.0, 160000, 1500)
        assert list(t.lr_multipliers.values()) == [10.0]
    segformer.model.weights = None  # no download: the variables do not depend on it
    segformer = build_model(segformer)
    paths = [v.path for v in segformer.trainable_variables]
    factors = variable_factors(t.lr_multipliers, paths)
    head = {p for p, f in zip(paths, factors, strict=True) if f == 10.0}
    assert head == {p for p in paths if p.startswith(("decoder_", "logits/"))} and len(head) == 13
    keras.backend.clear_session()


def test_demo_yaml_equals_the_demo_config():
    assert load_config(ZOO / "demo_synthetic.yaml") == demo_config()


def test_defaults_and_float_parsing(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL + "  weight_decay: 1e-4\n"))
    assert cfg.train.weight_decay == 1e-4 and isinstance(cfg.train.weight_decay, float)
    assert cfg.train.optimizer == "sgd" and cfg.eval.scales == [1.0]
    assert parse_scalar("8") == 8 and parse_scalar("[1, 2]") == [1, 2]
    assert parse_scalar("2.5e-3") == 2.5e-3 and parse_scalar("null") is None


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = _write(tmp_path, MINIMAL + "  batch_sise: 4\n", "typo.yaml")
    with pytest.raises(
        ConfigError, match=r"typo\.yaml: unknown key 'train\.batch_sise'.*batch_size"
    ):
        load_config(path)


def test_wrong_type_names_the_key_and_the_file(tmp_path):
    path = _write(tmp_path, MINIMAL.replace("batch_size: 2", "batch_size: two"), "bad.yaml")
    with pytest.raises(ConfigError, match=r"bad\.yaml: train\.batch_size: expected int, got str"):
        load_config(path)
    path = _write(tmp_path, MINIMAL + "  optimizer: adam\n", "bad2.yaml")
    with pytest.raises(ConfigError, match=r"train\.optimizer: got 'adam', allowed: 'sgd', 'adamw'"):
        load_config(path)
    path = _write(tmp_path, MINIMAL + "  batch_size: true\n", "bad3.yaml")
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config(path)


def test_nested_list_items_are_checked(tmp_path):
    path = _write(tmp_path, MINIMAL + "  loss: [{name: dice, wieght: 1}]\n")
    with pytest.raises(ConfigError, match=r"unknown key 'train\.loss\[0\]\.wieght'"):
        load_config(path)


def test_missing_required_and_out_of_range(tmp_path):
    with pytest.raises(ConfigError, match="missing required key.*model"):
        load_config(_write(tmp_path, "name: x\ndata: {name: synthetic}\n"))
    with pytest.raises(ConfigError, match=r"eval\.overlap: value 1\.5 is out of range"):
        load_config(_write(tmp_path, MINIMAL + "eval: {overlap: 1.5}\n"))
    with pytest.raises(ConfigError, match=r"train\.warmup_steps: value 1000 is out of range"):
        load_config(_write(tmp_path, MINIMAL + "  warmup_steps: 1000\n"))


def test_overrides(tmp_path):
    path = _write(tmp_path, MINIMAL)
    cfg = load_config(
        path,
        [
            "train.batch_size=8",
            "train.learning_rate=1e-3",
            "data.crop_size=[64, 32]",
            "model.options.base_filters=8",
            "eval.flip=true",
        ],
    )
    assert cfg.train.batch_size == 8 and cfg.train.learning_rate == 1e-3
    assert cfg.data.crop_size == [64, 32] and cfg.eval.flip is True
    assert cfg.model.options == {"base_filters": 8, "depth": 2}


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batchsize=8", r"^--set train\.batchsize=8 \(over .*\): unknown key 'batchsize'"),
        ("trian.steps=8", r"^--set trian\.steps=8 .*unknown key 'trian'"),
        (
            "train.batch_size=big",
            r"^--set train\.batch_size=big \(over .*cfg\.yaml\): "
            r"train\.batch_size: expected int",
        ),
        ("train.batch_size", "must look like section.key=value"),
        ("data.crop_size=[64, 32", r"^--set data\.crop_size=\[64, 32 .*not valid YAML"),
        ("model.options={base_filters: 8, depht: 2}", None),
    ],
)
def test_bad_overrides_say_they_came_from_set(tmp_path, override, message):
    if message is None:  # a builder option: the schema takes any dict, check_config names it
        cfg = load_config(_write(tmp_path, MINIMAL), [override])
        with pytest.raises(ConfigError, match=r"model\.options: 'unet' takes no option 'depht'"):
            check_config(cfg, "config.yaml")
        return
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, MINIMAL), [override])


def test_a_bad_value_in_the_file_names_the_file_not_set(tmp_path):
    path = _write(tmp_path, MINIMAL.replace("batch_size: 2", "batch_size: two"), "bad.yaml")
    with pytest.raises(ConfigError) as error:
        load_config(path, ["train.steps=5"])
    assert str(error.value).startswith(f"{path}: train.batch_size: expected int")
    assert "--set" not in str(error.value)


def test_broken_yaml_and_missing_file_are_one_line(tmp_path):
    path = _write(tmp_path, MINIMAL + "  steps: [1, 2\n", "broken.yaml")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML \(line \d+, column"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"config file .*nothere\.yaml does not exist"):
        load_config(tmp_path / "nothere.yaml")


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.name=unett", r"x\.yaml: model\.name: Unknown model 'unett'\. Known models: .*unet"),
        ("model.backbone=resnet35", r"model\.backbone: Unknown backbone 'resnet35'.*resnet34"),
        ("train.loss=[{name: dice_loss}]", r"train\.loss\[0\]\.name: unknown loss 'dice_loss'"),
        (
            "train.loss=[{name: focal, options: {gama: 2}}]",
            r"train\.loss\[0\]\.options: loss 'focal' takes no option 'gama'; allowed: .*gamma",
        ),
        (
            "data.augment={scale_rang: [1, 2]}",
            r"data\.augment: no augmentation option 'scale_rang'; allowed: .*scale_range",
        ),
    ],
)
def test_check_config_checks_names_and_options_against_the_builders(tmp_path, override, message):
    cfg = load_config(_write(tmp_path, MINIMAL), [override])
    with pytest.raises(ConfigError, match=message):
        check_config(cfg, "x.yaml")


def test_save_and_load_round_trip(tmp_path):
    cfg = load_config(ZOO / "segnet_camvid.yaml", ["train.steps=7"])
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg
    assert keras_seg.load_config is load_config


def test_pspnet_zoo_configs_train_the_aux_head_at_the_papers_weight():
    for path in ZOO_FILES:
        cfg = load_config(path)
        if cfg.model.name == "pspnet":
            assert cfg.model.options.get("aux_head") is True, path.name
            assert "aux_loss_weight" in path.read_text() and cfg.train.aux_loss_weight == 0.4
