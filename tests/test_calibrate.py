# Copyright 2026 The vecdit authors. Apache-2.0.
"""The one-step error (`vecdit.pipelines.one_step`), per-layer densities and `vecdit calibrate`, on
the tiny random-weight Wan pipeline (192 video tokens, 2 self-attention layers)."""
import dataclasses
import json

import pytest
import torch

import vecdit
from vecdit.config import VecAttnConfig
from vecdit.pipelines.calibrate import allocate, calibrate, layer_curves, save_calibration
from vecdit.pipelines.one_step import OneStep
from vecdit.pipelines.tiny import tiny_wan_pipeline

CALL = dict(height=128, width=128, num_frames=9, num_inference_steps=4, guidance_scale=5.0)
TILES = (1, 8, 8)  # 64 queries on the 3x8x8 grid: three query tiles


@pytest.fixture(scope="module")
def one():
    torch.manual_seed(0)
    pipe = tiny_wan_pipeline()
    return OneStep.capture(pipe, ["a red fox running", "a blue car"], seeds=(0,), capture_steps=(1, 2), call_kwargs=CALL)


def test_capture_keeps_both_cfg_branches_of_each_step(one):
    # 2 prompts x 2 steps x (cond, uncond); the generations stop after the last captured step
    assert [(f.prompt, f.step, f.branch) for f in one.forwards] == [
        (p, s, b) for p in (0, 1) for s in (1, 2) for b in (0, 1)]
    assert one.layers == 2
    # the stock replay gives the captured predictions
    for replay, f in zip(one.predictions(), one.forwards):
        assert torch.equal(replay, f.dense)


def test_one_step_error_is_zero_when_everything_is_kept_and_deterministic(one):
    processors = dict(one.models[0].attn_processors)
    kept_all = one.error(VecAttnConfig(density=1.0, query_tiles=TILES))
    assert kept_all["error"] < 1e-5
    sparse = one.error(VecAttnConfig(density=0.1, query_tiles=TILES))
    again = one.error(VecAttnConfig(density=0.1, query_tiles=TILES))
    assert sparse["error"] > 1e-3 and sparse["forwards"] == again["forwards"]
    assert set(sparse["by_step"]) == {1, 2}
    # the replays leave the model's processors as they were (the same objects)
    assert all(one.models[0].attn_processors[k] is v for k, v in processors.items())
    assert not vecdit.is_enabled(one.pipe)


def test_layer_errors_add_up_in_quadrature_and_layer_densities_apply(one):
    config = VecAttnConfig(density=0.1, query_tiles=TILES)
    alone = one.layer_errors(config)
    both = one.error(config)["error"]
    assert len(alone) == 2 and all(e > 0 for e in alone)
    assert sum(e * e for e in alone) ** 0.5 == pytest.approx(both, rel=0.5)
    # a per-layer table with the second layer at 1.0 is the first layer alone sparse
    table = one.error(dataclasses.replace(config, density=None, layer_density=(0.1, 1.0)))["error"]
    assert table == pytest.approx(alone[0], rel=1e-6)
    # the local (attention) errors fall with density and vanish when everything is kept
    local = one.local_errors(config, (0.1, 0.5, 1.0))
    assert local.shape == (2, 3) and bool((local[:, 0] >= local[:, 1]).all()) and bool((local[:, 2] == 0).all())


def test_layer_density_validation_and_stats_report_each_layers_target():
    with pytest.raises(ValueError, match="`layer_density` must be"):
        VecAttnConfig(layer_density=(0.2, 0.0))
    with pytest.raises(ValueError, match="`layer_density` sets the top-k rule"):
        VecAttnConfig(threshold=0.1, layer_density=(0.2,))
    config = VecAttnConfig(layer_density=(0.25, 0.5), query_tiles=TILES, collect_stats=True, dense_steps=0)
    assert VecAttnConfig.from_dict(config.to_dict()) == config and config.mean_density() == pytest.approx(0.375)
    pipe = tiny_wan_pipeline()
    vecdit.enable(pipe, config)
    pipe("a fox", num_inference_steps=2, height=128, width=128, num_frames=9, output_type="latent")
    layers = vecdit.stats(pipe)["by_layer"]
    vecdit.disable(pipe)
    assert [(r["layer"], r["target"]) for r in layers] == [(0, 0.25), (1, 0.5)]
    for r in layers:  # the top-k rule keeps each layer's own density (192 keys: within one key)
        assert r["achieved"] == pytest.approx(r["target"], abs=1 / 192)
    with pytest.raises(ValueError, match="`layer_density` has 3 layers but the model has 2"):
        vecdit.enable(pipe, dataclasses.replace(config, layer_density=(0.25, 0.5, 0.5)))


def test_allocate_meets_its_targets_in_quadrature():
    densities = (0.1, 0.25, 0.5, 1.0)
    # layer 1 is ten times as sensitive as layer 0
    curves = [[0.02, 0.01, 0.005, 0.0], [0.2, 0.1, 0.05, 0.0]]
    plan = allocate(curves, densities, target_density=0.3)
    assert plan["mean_density"] <= 0.3 + 1e-9
    assert plan["layer_density"][1] > plan["layer_density"][0]  # the sensitive layer gets the keys
    by_error = allocate(curves, densities, target_error=0.06)
    assert by_error["predicted_error"] <= 0.06
    chosen = by_error["layer_density"]
    assert sum(e[densities.index(d)] ** 2 for e, d in zip(curves, chosen)) ** 0.5 == pytest.approx(
        by_error["predicted_error"])
    # no cheaper choice meets the target
    cheaper = [(a, b) for a in densities for b in densities if (a + b) / 2 < by_error["mean_density"] - 1e-9]
    assert all((curves[0][densities.index(a)] ** 2 + curves[1][densities.index(b)] ** 2) ** 0.5 > 0.06
               for a, b in cheaper)
    with pytest.raises(ValueError, match="give one of"):
        allocate(curves, densities)


def test_grouped_estimate_is_the_exact_one_at_its_gain_density(one):
    config = VecAttnConfig(query_tiles=TILES)
    densities = (0.1, 0.5, 1.0)
    exact = layer_curves(one, config, densities, "exact")["curves"]
    grouped = layer_curves(one, config, densities, "grouped", gain_group=1)
    # per-layer gains reproduce the exact error where they were measured (0.1), and 0 where dense
    for e, g in zip(exact, grouped["curves"]):
        assert g[0] == pytest.approx(e[0], rel=1e-6) and g[2] == 0 == e[2]


def test_calibrate_writes_a_config_that_generate_loads(one, tmp_path, monkeypatch):
    result = calibrate(one.pipe, ["a red fox running"], VecAttnConfig(query_tiles=TILES), target_density=0.3,
                       progress=False, one=one, densities=(0.1, 0.25, 0.5, 1.0))
    assert result["mean_density"] <= 0.3 + 1e-9 and result["one_step_error"] > 0
    # the file's measured error is the instrument's on the same captures
    assert one.error(result["config"])["error"] == pytest.approx(result["one_step_error"], rel=1e-9)
    path = str(tmp_path / "cal.json")
    save_calibration(result, path, model="tiny-random")
    loaded = VecAttnConfig.from_calibration(path)
    assert loaded.layer_density == result["config"].layer_density and loaded.query_tiles == TILES
    assert json.loads(open(path).read())["one_step_error"] == result["one_step_error"]
    from vecdit.pipelines.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "v.npz"
    assert main(["generate", "--model", "tiny-random", "--prompt", "a fox", "--steps", "2", "--config", path,
                 "--output", str(out)]) == 0
    side = json.loads((tmp_path / "v.json").read_text())
    assert side["vecdit_config"]["layer_density"] == list(result["config"].layer_density)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a calibration file"):
        VecAttnConfig.from_calibration(str(bad))


def test_calibrate_command_on_the_tiny_pipeline(tmp_path, monkeypatch, capsys):
    from vecdit.pipelines.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "cal.json"
    argv = ["calibrate", "--model", "tiny-random", "--prompt", "a red fox", "--steps", "3", "--capture-steps", "1",
            "--target", "0.05", "--output", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["kind"] == "vecdit-calibration" and len(result["config"]["layer_density"]) == 2
    assert result["model"] == "tiny-random" and result["steps"] == 3
    assert main(["calibrate", "--model", "tiny-random", "--prompt", "x", "--output", str(out)]) == 2
    assert "give one of --target" in capsys.readouterr().err
    assert main(["calibrate", "--model", "no-such-model", "--prompt", "x", "--target", "0.1", "--output", str(out)]) == 2
