"""Run profiles: the report's recipe, CPU sizes that every model accepts, clear override errors."""

import dataclasses

import pytest

from allnet_lib.models import MODEL_SPECS, list_models
from allnet_lib.profiles import PROFILES, Profile, get_profile


def test_the_profiles_exist_cheapest_first():
    assert list(PROFILES) == ["smoke", "demo", "gpu", "seed"]
    for profile in PROFILES.values():
        assert isinstance(profile, Profile)
        assert set(profile.image_sizes) == set(list_models())
        assert profile.description


def test_seed_profile_is_the_report_recipe():
    p = get_profile("seed")
    assert (p.optimizer, p.learning_rate, p.batch_size, p.epochs) == ("sgd", 0.0002, 30, 100)
    assert p.monitor == "val_accuracy" and p.crop == 400 and p.augment
    assert p.image_sizes == {"alexnet": 227, "vgg16": 224, "resnet50": 224,
                             "inception_v3": 299, "proposed": 300}
    assert p.image_sizes == {name: spec.report_size for name, spec in MODEL_SPECS.items()}
    assert p.max_train_images is None


@pytest.mark.parametrize("name", ["smoke", "demo", "gpu", "seed"])
def test_every_model_accepts_its_profile_size(name):
    profile = get_profile(name)
    for model in list_models():
        assert profile.image_size(model) >= MODEL_SPECS[model].min_size


def test_smoke_uses_the_smallest_sizes_and_few_images():
    p = get_profile("smoke")
    assert p.image_sizes == {name: spec.min_size for name, spec in MODEL_SPECS.items()}
    assert p.epochs == 1 and p.max_train_images <= 16


def test_demo_profile_is_cpu_sized_and_says_why():
    p = get_profile("demo")
    assert max(p.image_sizes.values()) <= 96 and p.epochs <= 10
    assert p.image_sizes == {name: spec.demo_size for name, spec in MODEL_SPECS.items()}
    assert "report" in p.description


def test_gpu_profile_trains_at_the_report_sizes_from_the_decoded_cache():
    p = get_profile("gpu")
    assert p.image_sizes == get_profile("seed").image_sizes
    assert p.feed == "cache" and p.max_train_images is None and p.demo_images >= 10_000
    assert len(p.leakage_seeds) >= 3 and p.leakage_epochs > p.epochs
    assert any("mixed precision" in d for d in p.departures)


def test_feed_is_validated():
    with pytest.raises(ValueError, match="feed must be one of"):
        get_profile("demo", feed="disk")


def test_overrides_return_a_new_profile_and_keep_the_original():
    p = get_profile("demo", epochs=2, learning_rate=1e-3)
    assert (p.epochs, p.learning_rate) == (2, 1e-3)
    assert get_profile("demo").epochs == PROFILES["demo"].epochs
    assert get_profile(p) is p


def test_image_size_overrides():
    assert set(get_profile("demo", image_size=80).image_sizes.values()) == {80}
    partial = get_profile("demo", image_sizes={"alexnet": 227})
    assert partial.image_size("alexnet") == 227
    assert partial.image_size("vgg16") == PROFILES["demo"].image_size("vgg16")


def test_per_model_learning_rates():
    p = get_profile("demo", learning_rate=1e-4, learning_rates={"resnet50": 1e-3})
    assert p.learning_rate_for("resnet50") == 1e-3 and p.learning_rate_for("vgg16") == 1e-4
    with pytest.raises(ValueError, match="unknown model"):
        get_profile("demo", learning_rates={"lenet": 1e-3})
    with pytest.raises(ValueError, match="bn_momentum must be in"):
        get_profile("demo", bn_momentum=1.5)


def test_unknown_field_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown profile field\(s\) \['epoch'\].*epochs"):
        get_profile("demo", epoch=3)


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown profile 'fast'.*smoke, demo, gpu, seed"):
        get_profile("fast")


def test_bad_values_fail_early():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        get_profile("demo", optimizer="rmsprop")
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        get_profile("demo", epochs=0)
    with pytest.raises(ValueError, match="unknown model"):
        get_profile("demo", image_sizes={"lenet": 32})


def test_profiles_are_frozen_and_serialisable():
    p = get_profile("smoke")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.epochs = 5
    d = p.to_dict()
    assert d["name"] == "smoke" and d["image_sizes"]["vgg16"] == 32
    assert Profile(**d) == p


def test_default_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ALLNET_PROFILE", "smoke")
    assert get_profile().name == "smoke"
    monkeypatch.delenv("ALLNET_PROFILE")
    assert get_profile().name == "demo"


def test_image_size_of_an_unknown_model():
    with pytest.raises(ValueError, match="no image size for model 'lenet'"):
        get_profile("demo").image_size("lenet")


def test_xla_on_cpu_names_known_models():
    """A typo in xla_on_cpu fails when the profile is made, naming the field and the model."""
    with pytest.raises(ValueError, match=r"xla_on_cpu name unknown model\(s\) \['alexnett'\]"):
        get_profile("demo", xla_on_cpu=["alexnett"])
    profile = get_profile("demo", xla_on_cpu=["vgg16"])
    assert profile.xla_on_cpu == ("vgg16",) and profile.to_dict()["xla_on_cpu"] == ["vgg16"]


def test_a_runs_settings_hold_its_own_models_values_only():
    """What a finished run is compared by: the per-model fields cut down to its model, the same
    whether cut once or twice (so older configs holding every model's values compare equal)."""
    from allnet_lib.train import comparable_settings, for_comparison, settings_for_model

    demo = get_profile("demo")
    vgg = comparable_settings(demo, "vgg16")
    assert vgg["image_sizes"] == {"vgg16": demo.image_size("vgg16")}
    assert vgg["learning_rate"] == demo.learning_rate_for("vgg16") and vgg["learning_rates"] == {}
    assert vgg["xla_on_cpu"] == (["vgg16"] if "vgg16" in demo.xla_on_cpu else [])
    resnet = comparable_settings(demo, "resnet50")
    assert resnet["learning_rate"] == demo.learning_rates["resnet50"] != demo.learning_rate
    assert settings_for_model(vgg, "vgg16") == vgg
    older = {"model": "vgg16", "profile": comparable_settings(demo), "seed": 0}
    assert for_comparison(older) == {"model": "vgg16", "profile": vgg, "seed": 0}
    changed = get_profile("demo", learning_rates={**demo.learning_rates, "proposed": 1e-2},
                          image_sizes={**demo.image_sizes, "alexnet": 128})
    assert comparable_settings(changed, "vgg16") == vgg
