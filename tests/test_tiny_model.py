# Copyright 2026 The vecdit authors. Apache-2.0.
"""The tiny video model's data and training path (issue: a tiny model trained here): procedural
clips whose captions say what the frames show, and a resumable training run that writes a
`WanPipeline` folder `from_pretrained` loads. The real training runs on a GPU
(`python -m vecdit.pipelines.tiny_train`); here it runs a few steps at a tiny size."""
import numpy as np
import pytest
import torch

from vecdit.pipelines.tiny_data import COLORS, MOTIONS, SHAPES, color_centroid, make_clip, parse_caption, render
from vecdit.pipelines.tiny_train import TinyModelConfig, TrainConfig, Trainer


@pytest.mark.parametrize("motion, axis, sign", [("moving right", 0, 1), ("moving left", 0, -1), ("moving up", 1, -1),
                                                ("moving down", 1, 1)])
def test_the_caption_says_what_the_frames_show(motion, axis, sign):
    clip = render(parse_caption(f"a red circle {motion}"), frames=9, size=64)
    first, last = color_centroid(clip.frames[0], "red"), color_centroid(clip.frames[-1], "red")
    assert first is not None and last is not None
    assert sign * (last[axis] - first[axis]) > 0.3 * 64 * 0.5  # it travels about half the frame
    assert abs(last[1 - axis] - first[1 - axis]) < 2


def test_clips_are_seeded_captioned_from_the_grammar_and_in_range():
    a, b = make_clip(7, frames=5, size=32), make_clip(7, frames=5, size=32)
    assert np.array_equal(a.frames, b.frames) and a.caption == b.caption
    captions = {make_clip(s, frames=3, size=32).caption for s in range(40)}
    assert len(captions) > 20
    for s in range(40):
        clip = make_clip(s, frames=3, size=32)
        assert clip.frames.shape == (3, 32, 32, 3) and 0 <= clip.frames.min() and clip.frames.max() <= 1
        spec = parse_caption(clip.caption)  # every generated caption is in the grammar
        assert [o.phrase() for o in spec["objects"]] == [o.phrase() for o in clip.objects]
    with pytest.raises(ValueError, match="colors"):
        parse_caption("a pink circle moving right")
    assert {"red", "blue"} <= set(COLORS) and "circle" in SHAPES and "moving right" in MOTIONS


def test_training_resumes_and_exports_a_loadable_pipeline(tmp_path, monkeypatch):
    from diffusers import WanPipeline

    model = TinyModelConfig(frames=5, size=32)
    train = TrainConfig(vae_steps=4, dit_steps=4, batch=2, vae_batch=2, save_every=2, vae_frames=5, vae_crop=16, dit_clips=6)
    first = Trainer(str(tmp_path), model, train, "cpu")
    assert not first.run(max_minutes=5, max_steps=3)
    assert first.state == {"stage": "vae", "step": 3, "losses": first.state["losses"]}
    again = Trainer(str(tmp_path), model, train, "cpu")  # resumes from the checkpoint
    assert again.state["stage"] == "vae" and again.state["step"] == 3 and len(again.state["losses"]["vae"]) == 3
    assert again.run(max_minutes=5)
    assert len(again.state["losses"]["vae"]) == 4 and len(again.state["losses"]["dit"]) == 4
    std = again.parts["vae"].config.latents_std
    assert len(std) == model.z_dim and all(s > 0 for s in std)  # latent statistics fixed after stage 1
    pipe = WanPipeline.from_pretrained(str(tmp_path / "pipeline"), dtype=torch.float32)
    assert pipe.transformer.dtype == torch.float32 and list(pipe.vae.config.latents_std) == pytest.approx(std, rel=1e-3)
    pipe.set_progress_bar_config(disable=True)
    frames = pipe("a red circle moving right", height=32, width=32, num_frames=5, num_inference_steps=2,
                  output_type="np").frames[0]
    assert frames.shape == (5, 32, 32, 3) and np.isfinite(frames).all()
    # shipped as the package's tiny model, `vecdit generate --model tiny` loads it (its clip size)
    import json

    from vecdit.pipelines import generate, models
    from vecdit.pipelines.cli import main

    monkeypatch.setattr(models, "tiny_model_folder", lambda: str(tmp_path / "pipeline"))
    monkeypatch.setattr(generate, "tiny_model_folder", lambda: str(tmp_path / "pipeline"))
    out = tmp_path / "v.mp4"
    assert main(["generate", "--model", "tiny", "--prompt", "a red circle moving right", "--steps", "2",
                 "--output", str(out)]) == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["random_weights"] is False and (side["frames"], side["height"]) == (5, 32)
    # any tiny_train export passed as a folder gets its own clip size too (not a full Wan model's)
    name, preset = models.resolve_model(str(tmp_path / "pipeline"))
    assert preset.hub_id == name and (preset.frames, preset.height, preset.steps) == (5, 32, 20)


def test_torch_renderer_matches_the_numpy_one():
    for seed in range(6):
        a = make_clip(seed, frames=5, size=48)
        b = make_clip(seed, frames=5, size=48, device="cpu")
        assert torch.is_tensor(b.frames) and b.caption == a.caption
        assert np.abs(b.frames.numpy() - a.frames).max() < 1e-4


def test_quality_check_dense_vs_sparse_on_the_tiny_pipeline():
    """The end-to-end quality path (PSNR / SSIM of vecdit vs dense generations), here on the random
    tiny pipeline: everything kept matches dense, a sparse density differs, achieved density recorded."""
    from vecdit.pipelines.tiny import tiny_wan_pipeline
    from vecdit.pipelines.tiny_quality import quality

    result = quality(tiny_wan_pipeline(), {"size": 128, "frames": 9}, steps=2, prompts=("a red circle moving right",),
                     densities=(0.25, 1.0), variants=(("tiles", True),))
    by_density = {r["density"]: r for r in result["rows"]}
    assert by_density[1.0]["psnr"] > 40 and by_density[1.0]["ssim"] > 0.99
    assert by_density[0.25]["psnr"] < by_density[1.0]["psnr"]
    assert abs(by_density[0.25]["achieved_density"] - 0.25) < 0.02
    # the one-object videos' motion and shape checks, dense and per row (noise: none passes, none lost)
    assert [m["prompt"] for m in result["motion"]] == ["a red circle moving right"] and "one_piece" in result["motion"][0]
    assert by_density[1.0]["motion_ok"] == "0/1" and by_density[1.0]["round_ok"] == "0/1"
    assert by_density[1.0]["one_piece_ok"] == "0/1" and by_density[1.0]["checks_lost"] == 0


def test_motion_sweep_checks_every_motion_prompt_at_every_seed():
    """`tiny_quality --motion-seeds`: each motion prompt at each seed, dense, read back by
    `motion_check` and `shape_check`; the random tiny pipeline draws noise, so none passes."""
    from vecdit.pipelines.tiny import tiny_wan_pipeline
    from vecdit.pipelines.tiny_quality import MOTION_PROMPTS, motion_markdown, motion_sweep

    reports = motion_sweep(tiny_wan_pipeline(), {"size": 32, "frames": 5}, seeds=(0, 3), steps=2)
    assert [(r["prompt"], r["seed"]) for r in reports] == [(p, s) for p in MOTION_PROMPTS for s in (0, 3)]
    assert not any(r["ok"] for r in reports) and not any(r["one_piece"] for r in reports)
    table = motion_markdown(reports)
    assert "motion as captioned in 0 of 8, one piece in every frame in 0 of 8, circles round in 0 of 4" in table
    assert table.count("| no |") == 8 and table.count(", no (frame") == 8


def test_motion_check_reads_the_caption_back_from_frames():
    from vecdit.pipelines.tiny_quality import MOTION_PROMPTS, motion_check

    for i, prompt in enumerate(MOTION_PROMPTS):
        clip = render(parse_caption(prompt, np.random.default_rng(i)), frames=17, size=64)
        frames = (clip.frames * 255).round().astype(np.uint8)
        assert motion_check(frames, prompt)["ok"], prompt
        assert not motion_check(frames[::-1], prompt)["ok"]  # played backwards: the wrong way
    still = np.repeat((render(parse_caption("a red circle moving right"), 1, 64).frames * 255).astype(np.uint8), 17, 0)
    assert not motion_check(still, "a red circle moving right")["ok"]  # there, but not moving
    noise = np.random.default_rng(0).integers(0, 256, (17, 64, 64, 3), dtype=np.uint8)
    assert not motion_check(noise, "a red circle moving right")["ok"]


TRAINED = __import__("vecdit.pipelines.models", fromlist=["x"]).tiny_model_folder() is not None


@pytest.fixture(scope="module")
def trained_circle(tmp_path_factory, readme_video):
    """The README's first command with the packaged trained model (vecdit at the model's own density
    and CFG scale, from its vecdit_tiny.json; run once for the whole session, conftest.py) and the same
    generation dense: the videos' frames."""
    from vecdit.pipelines.cli import main
    from vecdit.samples.video_io import read_video

    out, done = readme_video
    assert done.returncode == 0, done.stderr
    folder, videos = tmp_path_factory.mktemp("circle"), {"vec": read_video(str(out))}
    out = folder / "dense.mp4"
    assert main(["generate", "--model", "tiny", "--prompt", "a red circle moving right", "--attention", "dense",
                 "--output", str(out)]) == 0
    videos["dense"] = read_video(str(out))
    return videos


@pytest.mark.skipif(not TRAINED, reason="no trained tiny model ships (python -m vecdit.pipelines.tiny_train, then "
                                        "copy its pipeline folder to pipelines/tiny_model/)")
def test_trained_tiny_model_shows_the_caption_colour_and_sparse_stays_close(trained_circle):
    """Not noise: neighbouring frames are alike (uniform noise differs by about 85 of 255) and the
    caption's colour is the one seen in most frames; vecdit at the default density stays close to
    dense: far closer than another dense sample of the same prompt (the spread a user sees anyway)."""
    from vecdit.pipelines.tiny_quality import motion_of
    from vecdit.samples.compare import psnr

    frames = trained_circle["vec"]
    assert frames.shape == (33, 256, 256, 3)
    assert np.abs(np.diff(frames.astype(np.int16), axis=0)).mean() < 10
    seen = {color: motion_of(frames, color)["seen"] for color in COLORS}
    assert max(seen, key=seen.get) == "red" and seen["red"] >= 0.5, seen
    # the packaged (v7) model: dense from another seed (1 vs 0) is 14.8 dB from dense
    # (bench/results/tiny-train/tiny-train-v7-nvidia-h200-2026-12-02.md), the spread a user sees anyway; vecdit
    # at its shipped settings (50%, 4x4x4, compensated) must stay 2 dB closer than that (19.7 dB on the CPU)
    sparse = psnr(frames, trained_circle["dense"])
    assert sparse > 14.8 + 2, sparse


@pytest.mark.skipif(not TRAINED, reason="no trained tiny model ships")
def test_trained_tiny_model_moves_the_red_circle_right(trained_circle):
    """The tiny model issue's done-test: the README's command shows the red circle moving right,
    with vecdit and dense (seed 0; the model passes 9 of 12 motion checks over 3 seeds)."""
    from vecdit.pipelines.tiny_quality import motion_check

    for attention in ("vec", "dense"):
        report = motion_check(trained_circle[attention], "a red circle moving right")
        assert report["ok"], (attention, report)


def test_training_goes_on_from_an_exported_pipeline(tmp_path):
    """`--init-from`: a run carries only an exported pipeline folder (no optimizer checkpoint) and
    training goes on from its weights and step counts; raising the VAE steps reopens that stage."""
    model = TinyModelConfig(frames=5, size=32)
    train = TrainConfig(vae_steps=2, dit_steps=2, batch=2, vae_batch=2, save_every=100, vae_frames=5, vae_crop=16, dit_clips=4)
    first = Trainer(str(tmp_path / "a"), model, train, "cpu")
    assert first.run(max_minutes=5)
    folder = str(tmp_path / "a" / "pipeline")
    more_dit = TrainConfig(**{**train.__dict__, "dit_steps": 4})
    again = Trainer(str(tmp_path / "b"), model, more_dit, "cpu", init_from=folder)
    assert again.state["stage"] == "dit" and again.state["step"] == 2
    assert again.parts["vae"].config.latents_std == pytest.approx(first.parts["vae"].config.latents_std, rel=1e-3)
    loaded = again.parts["transformer"].state_dict()
    for name, value in first.parts["transformer"].state_dict().items():  # the exported (fp16) weights
        assert torch.allclose(loaded[name], value.half().float(), atol=1e-6), name
    assert again.run(max_minutes=5) and again.done_steps("dit") == 4 and len(again.state["losses"]["dit"]) == 2
    import json

    with open(tmp_path / "b" / "pipeline" / "vecdit_tiny.json") as f:
        assert json.load(f)["steps"] == {"vae": 2, "dit": 4, "decoder": 0}
    more_vae = TrainConfig(**{**train.__dict__, "vae_steps": 3})
    reopened = Trainer(str(tmp_path / "c"), model, more_vae, "cpu", init_from=folder)
    assert reopened.state["stage"] == "vae" and reopened.state["step"] == 2
    assert reopened.run(max_minutes=5) and reopened.done_steps("vae") == 3 and reopened.done_steps("dit") == 2


def test_the_decoder_stage_trains_only_the_decoder_and_its_vae_goes_into_a_dit_run(tmp_path):
    """`--decoder-steps` on an export trains the VAE's decoder alone (the encoder, hence the DiT's
    latents, unchanged), so it can run beside a DiT run; `take_decoder` then joins the two."""
    import json

    from vecdit.pipelines.tiny_train import take_decoder

    model = TinyModelConfig(frames=5, size=32)
    train = TrainConfig(vae_steps=2, dit_steps=2, batch=2, vae_batch=2, save_every=100, vae_frames=5, vae_crop=16, dit_clips=4)
    first = Trainer(str(tmp_path / "a"), model, train, "cpu")
    assert first.run(max_minutes=5)
    folder = str(tmp_path / "a" / "pipeline")
    before = {k: v.clone() for k, v in first.parts["vae"].state_dict().items()}
    decoder = Trainer(str(tmp_path / "d"), model, TrainConfig(**{**train.__dict__, "decoder_steps": 3}), "cpu", init_from=folder)
    assert decoder.state["stage"] == "decoder" and decoder.state["step"] == 0
    assert decoder.run(max_minutes=5, max_steps=2) is False  # a checkpoint in the decoder stage resumes
    resumed = Trainer(str(tmp_path / "d"), model, TrainConfig(**{**train.__dict__, "decoder_steps": 3}), "cpu")
    assert resumed.state["stage"] == "decoder" and resumed.state["step"] == 2
    trained = {n for n, p in resumed.parts["vae"].named_parameters() if p.requires_grad}
    assert trained and all(n.startswith(("decoder.", "post_quant_conv.")) for n in trained)
    assert resumed.run(max_minutes=5) and resumed.done_steps("decoder") == 3
    after = resumed.parts["vae"].state_dict()
    for name, value in before.items():  # the encoder as exported (fp16) and frozen (bf16)
        if name.startswith(("encoder.", "quant_conv.")):
            assert torch.equal(after[name], value.half().to(torch.bfloat16).float()), name
    assert any(not torch.allclose(after[n].float(), before[n].half().float(), atol=1e-6) for n in trained)
    # beside it, the DiT went on from the same export; the decoder joins it
    dit = Trainer(str(tmp_path / "b"), model, TrainConfig(**{**train.__dict__, "dit_steps": 3}), "cpu", init_from=folder)
    assert dit.state["stage"] == "dit" and dit.run(max_minutes=5)
    take_decoder(str(tmp_path / "b" / "pipeline"), str(tmp_path / "d" / "pipeline"))
    with open(tmp_path / "b" / "pipeline" / "vecdit_tiny.json") as f:
        assert json.load(f)["steps"] == {"vae": 2, "dit": 3, "decoder": 3}
    # a DiT run from that export keeps its trained decoder as exported (not rounded to bf16 again)
    from diffusers import AutoencoderKLWan

    joined = str(tmp_path / "b" / "pipeline")
    exported = AutoencoderKLWan.from_pretrained(joined, subfolder="vae").state_dict()
    dit_on = Trainer(str(tmp_path / "f"), model, TrainConfig(**{**train.__dict__, "dit_steps": 4}), "cpu", init_from=joined)
    assert dit_on.run(max_minutes=5)
    shipped = AutoencoderKLWan.from_pretrained(str(tmp_path / "f" / "pipeline"), subfolder="vae").state_dict()
    for name in trained:
        assert torch.equal(shipped[name], exported[name]), name
    with pytest.raises(ValueError, match="encoder"):  # a VAE that was trained whole does not fit
        more_vae = Trainer(str(tmp_path / "c"), model, TrainConfig(**{**train.__dict__, "vae_steps": 3}), "cpu", init_from=folder)
        assert more_vae.run(max_minutes=5)
        take_decoder(str(tmp_path / "b" / "pipeline"), str(tmp_path / "c" / "pipeline"))


def test_paired_gain_compares_each_video_with_its_uncompensated_twin():
    """`tiny_quality`'s PSNR gain: video by video against the uncompensated row at the same density,
    mean and standard error; none for the uncompensated row itself or without a twin."""
    from vecdit.pipelines.tiny_quality import markdown, paired_gain, video_seeds

    assert video_seeds(2, 3) == [2, 1002, 2002] and video_seeds(0, 1) == [0]
    rows = [{"order": "tiles", "compensate": False, "density": 0.25, "psnr_videos": [10.0, 12.0, 14.0]},
            {"order": "tiles, compensated", "compensate": True, "density": 0.25, "psnr_videos": [11.0, 15.0, 14.5]},
            {"order": "tiles, compensated", "compensate": True, "density": 0.1, "psnr_videos": [9.0, 9.0, 9.0]}]
    result = {"rows": rows}
    mean, err = paired_gain(result, rows[1])
    gains = np.array([1.0, 3.0, 0.5])
    assert abs(mean - gains.mean()) < 1e-12 and abs(err - gains.std(ddof=1) / 3 ** 0.5) < 1e-12
    assert paired_gain(result, rows[0]) is None and paired_gain(result, rows[2]) is None
    for r in rows:
        r.update(psnr=float(np.mean(r["psnr_videos"])), ssim=0.5, achieved_density=r["density"], seconds=1.0,
                 motion_ok="0/0", one_piece_ok="0/0", round_ok="0/0", checks_lost=0)
    text = markdown({**result, "prompts": ["p"], "seeds": 3, "steps": 2, "frames": 9, "size": 64,
                     "dense_seconds": 1.0, "motion": []}, "m", "cpu")
    assert f"+{gains.mean():.2f} ± {gains.std(ddof=1) / 3 ** 0.5:.2f}" in text and "3 seed(s) per prompt" in text
    assert "| dense | 1 | 1 | | | | 0/0 | 0/0 | 0/0 | | 1.0 |" in text and "| 0/0 | 0/0 | 0/0 | 0 | 1.0 |" in text


def test_attention_error_scores_the_captured_attention_with_and_without_compensation():
    """`tiny_quality --attention-error`: the model's own q, k, v at the capture steps go to the lab;
    every captured head gets recall and the output error of each compensation variant."""
    from vecdit.lab.compensation import VARIANTS
    from vecdit.pipelines.tiny import tiny_wan_pipeline
    from vecdit.pipelines.tiny_quality import attention_error, attention_error_markdown

    pipe = tiny_wan_pipeline()
    stock = {name: type(p) for name, p in pipe.transformer.attn_processors.items()}
    result = attention_error(pipe, {"size": 128, "frames": 9}, steps=2, prompts=("a red circle moving right",),
                             densities=(0.25, 1.0), capture_steps=(1,))
    assert {name: type(p) for name, p in pipe.transformer.attn_processors.items()} == stock
    layers = {r["layer"] for r in result["rows"]}
    assert len(layers) == len(pipe.transformer.blocks)
    for r in result["rows"]:
        errors = r["out_err"]
        assert set(errors) == set(VARIANTS) and all(np.isfinite(e) and e >= 0 for e in errors.values())
        if r["target_density"] == 1.0:  # everything kept: dense, nothing to compensate
            assert r["recall"] > 0.999 and max(errors.values()) < 1e-9
        else:
            assert errors["none"] > 0
    text = attention_error_markdown(result, "tiny", "cpu")
    assert "| tiles-topk | 0.25 |" in text
    with pytest.raises(ValueError, match="capture_steps"):
        attention_error(pipe, {"size": 128, "frames": 9}, steps=2, prompts=("a red circle moving right",),
                        densities=(0.25,), capture_steps=(5,))


def _video(prompt: str, frames: int = 33, size: int = 256, radius=None) -> np.ndarray:
    """uint8 frames of `prompt` drawn by `render` (the object `radius` frame sides, one per frame if a list)."""
    spec = parse_caption(prompt)
    if radius is None or np.isscalar(radius):
        if radius is not None:
            spec["objects"][0].radius = radius
        return (render(spec, frames, size).frames * 255).round().astype(np.uint8)
    out = []
    for i, r in enumerate(radius):  # one frame each, at the position it has in the whole clip
        spec["objects"][0].radius = r
        out.append(render(spec, len(radius), size).frames[i])
    return (np.stack(out) * 255).round().astype(np.uint8)


def test_components_label_each_frames_regions_in_4_and_8_connectivity():
    from vecdit.pipelines.tiny_data import components

    mask = np.zeros((2, 6, 6), bool)
    mask[0, 1, 1] = mask[0, 2, 2] = True  # touching at a corner only
    mask[0, 4:, 4:] = True
    mask[1, 1, 1] = mask[1, 2, 2] = True  # the same pixels in the next frame: its own regions
    with pytest.raises(ValueError, match="connectivity"):
        components(mask, 6)
    for connectivity, regions in ((8, 3), (4, 5)):
        labels = components(mask, connectivity)
        assert (labels[~mask] == -1).all() and len(np.unique(labels[mask])) == regions
        assert not set(labels[0][mask[0]]) & set(labels[1][mask[1]])
    # a snake (the longest chain a blob can make) and random masks against a plain flood fill
    snake = np.zeros((1, 41, 41), bool)
    snake[0, ::2, :] = True
    snake[0, 1::4, -1] = snake[0, 3::4, 0] = True
    assert len(np.unique(components(snake, 4)[snake[0][None]])) == 1
    rng = np.random.default_rng(0)
    for connectivity in (4, 8):
        for density in (0.3, 0.5, 0.6):
            m = rng.random((3, 24, 24)) < density
            got = components(m, connectivity)
            for f in range(3):
                expect = _flood_fill(m[f], connectivity)
                pairs = set(zip(got[f][m[f]].tolist(), expect[m[f]].tolist()))  # the same partition
                assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def _flood_fill(mask: np.ndarray, connectivity: int) -> np.ndarray:
    labels, count = np.full(mask.shape, -1), 0
    steps = [(0, 1), (1, 0), (0, -1), (-1, 0)] + ([(1, 1), (1, -1), (-1, 1), (-1, -1)] if connectivity == 8 else [])
    for start in zip(*np.nonzero(mask)):
        if labels[start] >= 0:
            continue
        labels[start], todo = count, [start]
        while todo:
            y, x = todo.pop()
            for dy, dx in steps:
                n = (y + dy, x + dx)
                if 0 <= n[0] < mask.shape[0] and 0 <= n[1] < mask.shape[1] and mask[n] and labels[n] < 0:
                    labels[n] = count
                    todo.append(n)
        count += 1
    return labels


def test_circularity_is_calibrated_on_drawn_disks():
    """At the tiny model's 256x256 a drawn disk reads 1.0 at any size and sub-pixel position; the
    perimeter does not depend on an edge's angle (a square turned by 0-45 degrees); a square reads
    about pi/4 and a triangle about 0.6 (3 sqrt(3) / (4 pi) with a little corner rounding)."""
    from vecdit.pipelines.tiny_data import circularity, color_mask, perimeter

    rng = np.random.default_rng(1)
    reads = []
    for radius in (12, 20, 30, 42, 60):
        for _ in range(3):
            spec = parse_caption("a red circle moving right")
            spec["objects"][0].radius, spec["objects"][0].start = radius / 256, tuple(rng.uniform(0.35, 0.65, 2))
            mask = color_mask(render(spec, 1, 256).frames, "red")
            reads.append(float(circularity(mask.sum(), perimeter(mask))[0]))
    assert 0.98 < min(reads) and max(reads) < 1.02, reads
    yy, xx = np.mgrid[0:256, 0:256] + 0.5
    turned = []
    for angle in np.radians([0, 10, 22.5, 30, 45]):
        u, v = (xx - 128.3) * np.cos(angle) + (yy - 127.8) * np.sin(angle), (yy - 127.8) * np.cos(angle) - (xx - 128.3) * np.sin(angle)
        square = np.maximum(abs(u), abs(v)) < 28
        turned.append(float(circularity(square.sum(), perimeter(square))))
    assert max(turned) - min(turned) < 0.03 and 0.77 < min(turned) and max(turned) < 0.83, turned
    square = color_mask(_video("a red square moving right", 1), "red")
    triangle = color_mask(_video("a red triangle moving right", 1), "red")
    assert 0.77 < circularity(square.sum(), perimeter(square))[0] < 0.83
    assert 0.58 < circularity(triangle.sum(), perimeter(triangle))[0] < 0.66
    assert perimeter(np.zeros((2, 8, 8), bool)).tolist() == [0, 0]


def test_shape_check_a_drawn_disk_moving_right_is_one_round_piece_of_one_size():
    from vecdit.pipelines.tiny_quality import motion_check, shape_check

    frames = _video("a red circle moving right")
    report = shape_check(frames, "a red circle moving right")
    assert report["piece"] == 1.0 and report["one_piece"]
    assert 0.98 < report["circularity"] < 1.02 and report["round"] is True
    assert report["size_spread"] < 0.02 and report["stable"] and report["shape_ok"]
    assert motion_check(frames, "a red circle moving right")["ok"]
    blank = np.zeros_like(frames)  # nothing of the colour: no piece, no circularity, no size
    empty = shape_check(blank, "a red circle moving right")
    assert empty["piece"] == 0 and empty["circularity"] is None and not empty["round"] and not empty["stable"]


def test_shape_check_a_blob_split_in_two_is_not_one_piece():
    from vecdit.pipelines.tiny_quality import shape_check

    frames = _video("a red circle moving right")
    for i in range(12, 20):  # a dark stripe through the middle of the disk for 8 frames
        x = int(np.nonzero((frames[i, 128, :, 0] > 128))[0].mean())
        frames[i, :, x - 2: x + 2] = 10
    report = shape_check(frames, "a red circle moving right")
    assert 0.45 < report["piece"] < 0.55 and 12 <= report["piece_frame"] < 20
    assert not report["one_piece"] and not report["shape_ok"]
    assert not report["stable"]  # the size is the largest region's: it halves where the disk splits


def test_shape_check_a_growing_square_has_no_stable_size_and_a_square_is_not_a_circle():
    from vecdit.pipelines.tiny_quality import shape_check

    frames = _video("a blue square moving left", 17, radius=np.linspace(0.08, 0.16, 17))
    report = shape_check(frames, "a blue square moving left")
    assert report["one_piece"] and report["round"] is None  # roundness is judged for circles only
    assert report["size_spread"] > 1 and not report["stable"] and not report["shape_ok"]
    assert shape_check(frames[:1].repeat(17, 0), "a blue square moving left")["stable"]
    # read as a circle: a square is pi/4 round, a triangle 0.6. The issue's bar (0.7) rejects the
    # triangle, not the square: only a bar above 0.83 tells a square from a disk
    square = shape_check(_video("a blue square moving left", 9), "a blue circle moving left")
    assert 0.77 < square["circularity"] < 0.83 and square["round"] is True
    assert shape_check(_video("a blue square moving left", 9), "a blue circle moving left", min_round=0.9)["round"] is False
    triangle = shape_check(_video("a blue triangle moving left", 9), "a blue circle moving left")
    assert triangle["circularity"] < 0.66 and triangle["round"] is False


def test_motion_markdown_counts_each_check_and_checks_lost_pairs_dense_with_sparse():
    from vecdit.pipelines.tiny_quality import check_counts, checks_lost, motion_markdown, video_check

    reports = [{"seed": 0, **video_check(_video("a red circle moving right", 17, 64), "a red circle moving right")},
               {"seed": 0, **video_check(_video("a blue square moving left", 17, 64), "a blue square moving left")}]
    assert check_counts(reports) == {"ok": (2, 2), "one_piece": (2, 2), "round": (1, 1), "stable": (2, 2)}
    table = motion_markdown(reports)
    assert ("motion as captioned in 2 of 2, one piece in every frame in 2 of 2, circles round in 1 of 1, "
            "a stable size in 2 of 2.") in table
    assert "| 1.00, yes (frame 0) |" in table and "| a blue square moving left | 0 |" in table
    worse = [{**reports[0], "round": False, "stable": False}, {**reports[1], "ok": False, "one_piece": False}]
    assert checks_lost(reports, worse) == 3 and checks_lost(worse, reports) == 0 and checks_lost(reports, reports) == 0
