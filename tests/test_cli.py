# Copyright 2026 The vecdit authors. Apache-2.0.
"""`vecdit generate | sample | compare` on the offline tiny model."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from vecdit.pipelines.cli import main
from vecdit.samples import compare_dirs, load_vbench, psnr, sample_name, ssim
from vecdit.samples.video_io import read_video, write_video


def test_readme_main_command_writes_a_playable_mp4(readme_video):
    out, done = readme_video  # the README's first command, as a user runs it (conftest.py)
    tmp_path = out.parent
    assert done.returncode == 0, done.stderr
    # the packaged trained tiny model (pipelines/tiny_model/): its clip size, 20 steps, no noise note
    assert "noise" not in done.stderr
    frames = read_video(str(out))
    assert frames.shape == (33, 256, 256, 3)
    side = json.loads((tmp_path / "circle.json").read_text())
    assert side["random_weights"] is False and set(side["seconds"]) >= {"text_encoding", "denoising", "decoding"}
    assert side["settings"]["steps"] == 20 and side["vecdit_config"]["query_tiles"] == [4, 4, 4]
    # the model's own sampling settings (its vecdit_tiny.json), and the default rule keeps that density on
    # learned attention (tiles of 64 on the 9x16x16 grid)
    from vecdit.pipelines.models import tiny_generation, tiny_model_folder

    chosen = tiny_generation(tiny_model_folder())
    assert side["settings"]["guidance"] == chosen["guidance"] and side["vecdit_config"]["density"] == chosen["density"]
    assert tuple(side["vecdit_config"]["query_tiles"]) == chosen["query_tiles"] and side["vecdit_config"]["compensate"] is True
    assert side["vecdit_config"]["threshold"] is None and side["density"] == pytest.approx(chosen["density"], abs=0.01)


def test_tiny_random_is_the_offline_noise_model(tmp_path, monkeypatch):
    from vecdit.pipelines.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "noise.mp4"
    assert main(["generate", "--model", "tiny-random", "--prompt", "a red fox", "--output", str(out)]) == 0
    assert read_video(str(out)).shape == (9, 128, 128, 3)
    side = json.loads((tmp_path / "noise.json").read_text())
    assert side["random_weights"] is True and side["settings"]["steps"] == 4
    from vecdit.config import PRESET_DENSITY

    assert side["density"] == pytest.approx(PRESET_DENSITY, abs=0.01)  # the top-k rule keeps its density on random weights too


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "wan9"], "choose one of tiny, tiny-random, wan2.1-t2v-1.3b"),
        (["--frames", "10"], "nearest valid: 9 or 13"),
        (["--height", "70"], "nearest valid: 64 or 80"),
        (["--attention", "vec", "--threshold", "1.5"], "threshold"),
        (["--attention", "vec", "--query-tiles", "4x4"], "query-tiles"),
        (["--model", "nobody/no-such-model"], "(`hf download nobody/no-such-model`)"),
        (["--output", "/proc/no/such/dir/x.mp4"], "cannot write --output"),
        (["--output", "x.avi"], ".mp4"),
        (["--model", "wan2.2-i2v-a14b"], "give the first frame with --image"),
        (["--image", "x.png"], "--image needs an I2V model (wan2.1-i2v-14b-480p"),
        (["--model", "wan2.2-ti2v-5b", "--height", "720"], "multiple of 32 for this model; got 720, nearest valid: 704 or 736"),
        (["--max-density", "0.3"], "--max-density caps the min-p rule"),
        (["--steps", "0"], "--steps must be a whole number >= 1, got 0"),
        (["--steps", "-1"], "--steps must be a whole number >= 1, got -1"),
        (["--frames", "0"], "--frames must be 4k+1; got 0"),
        (["--ulysses", "0"], "--ulysses must be a whole number >= 1, got 0"),
        (["--model", "./no-such-folder"], "--model './no-such-folder': the folder does not exist"),
        (["--model", "/no/such/folder"], "--model '/no/such/folder': the folder does not exist"),
    ],
    ids=["unknown-model", "frames", "height", "threshold", "tiles", "hub-offline", "unwritable", "extension",
         "i2v-needs-image", "t2v-takes-no-image", "ti2v-size", "max-density-without-threshold", "steps-0",
         "steps-negative", "frames-0", "ulysses-0", "missing-relative-folder", "missing-absolute-folder"],
)
def test_generate_errors_name_the_fix(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    code = main(["generate", "--prompt", "a fox", *argv])
    assert code == 2
    err = capsys.readouterr().err
    # no traceback; the error is one line, the last (the hub case: diffusers' own notes come first)
    assert "Traceback" not in err and message in err.strip().splitlines()[-1]


def _no_loading(monkeypatch):
    """Argument errors come before any weights load: loading fails the test."""
    from vecdit.pipelines import generate

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(generate, "load_pipeline", refuse)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--prompt", "a fox", "--output", "/proc/no/such/dir/x.mp4"],
         "cannot write --output '/proc/no/such/dir/x.mp4'"),
        (["generate", "--prompt", "a fox", "--steps", "0"], "--steps must be a whole number >= 1, got 0"),
        (["sample", "--prompts", "missing.txt", "--out", "s"],
         "--prompts 'missing.txt' does not exist; give a text file with one prompt per line"),
        (["sample", "--prompts", "empty.txt", "--out", "s"], "--prompts 'empty.txt' holds no prompts"),
        (["sample", "--steps", "0", "--out", "s"], "--steps must be a whole number >= 1, got 0"),
        (["sample", "--limit", "0", "--out", "s"], "--limit must be a whole number >= 1, got 0"),
        (["sample", "--samples-per-prompt", "0", "--out", "s"], "--samples-per-prompt must be a whole number >= 1, got 0"),
        (["sample", "--out", "/proc/no/such/dir"], "cannot write --out '/proc/no/such/dir'"),
        (["calibrate", "--prompts", "missing.txt"], "--prompts 'missing.txt' does not exist"),
        (["calibrate", "--prompt", "a fox", "--output", "/proc/no/such/dir/t.json"],
         "cannot write --output '/proc/no/such/dir/t.json'"),
        (["compare", "no-dense", "no-sparse"], "DIR_A 'no-dense' does not exist; give two folders of videos"),
        (["compare", "empty", "no-sparse"], "DIR_B 'no-sparse' does not exist"),
        (["compare", "empty", "empty"], "DIR_A 'empty' holds no videos"),
    ],
    ids=["generate-unwritable", "generate-steps", "sample-missing-prompts", "sample-empty-prompts", "sample-steps",
         "sample-limit", "sample-samples-per-prompt", "sample-unwritable", "calibrate-missing-prompts",
         "calibrate-unwritable", "compare-missing-a", "compare-missing-b", "compare-no-videos"],
)
def test_argument_errors_are_one_line_before_loading(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    _no_loading(monkeypatch)
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "empty").mkdir()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"vecdit {argv[0]}: error: {message}" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_help_is_fast_shows_defaults_and_imports_no_torch():
    """`vecdit --help` loads neither torch nor diffusers; every option has help, defaults shown."""
    code = (
        "import sys\n"
        "from vecdit.pipelines.cli import build_parser, main\n"
        "for argv in (['--help'], ['generate', '--help'], ['sample', '--help'], ['compare', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'triton', 'numpy') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "400"})  # one help line per option
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout
    for shown in ("--model MODEL", "(default: tiny)", "(default: vec)", "--steps STEPS", "the model preset's",
                  "(default: out.mp4)", "(default: vbench)", "--limit LIMIT", "(default: 5)", "default: DIR_B/compare"):
        assert shown in done.stdout, shown

    from vecdit.pipelines.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"vecdit {name} {action.option_strings or action.dest} has no help text"


def test_full_size_model_without_cuda_errors(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["generate", "--model", "wan2.1-t2v-14b", "--prompt", "a fox"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_vbench_suite_and_naming():
    suite = load_vbench()
    assert len(suite) == 946
    assert len(load_vbench(["color"])) == 85
    with pytest.raises(ValueError, match="subject_consistency"):
        load_vbench(["colour"])
    assert sample_name("a cat / dog", 3) == "a cat   dog-3.mp4"


def test_sample_naming_seeds_resume_after_kill(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\na blue car\n")
    out = tmp_path / "samples"
    argv = ["sample", "--model", "tiny-random", "--prompts", str(prompts), "--samples-per-prompt", "2", "--out", str(out),
            "--steps", "2", "--frames", "5", "--seed", "10"]
    assert main(argv) == 0
    names = sorted(p.name for p in out.glob("*.mp4"))
    assert names == ["a blue car-0.mp4", "a blue car-1.mp4", "a red fox-0.mp4", "a red fox-1.mp4"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert {v["seed"] for k, v in manifest["videos"].items() if k.endswith("-1.mp4")} == {11}
    assert all(v["seconds"] > 0 for v in manifest["videos"].values())
    # simulated kill: one video never finished (only its .partial file exists), the others stay
    kept = (out / "a red fox-0.mp4").stat().st_mtime_ns
    (out / "a blue car-1.mp4").rename(out / "a blue car-1.partial.mp4")
    assert main(argv) == 0
    assert (out / "a red fox-0.mp4").stat().st_mtime_ns == kept  # finished files are skipped
    assert (out / "a blue car-1.mp4").exists()
    assert read_video(str(out / "a blue car-1.mp4")).shape[0] == 5


def test_sample_vbench_suite_by_dimension(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "vbench"
    argv = ["sample", "--model", "tiny-random", "--suite", "vbench", "--dimension", "color", "--limit", "1",
            "--samples-per-prompt", "1", "--out", str(out), "--steps", "1", "--frames", "5"]
    assert main(argv) == 0
    first = load_vbench(["color"])[0]["prompt_en"]
    assert [p.name for p in out.glob("*.mp4")] == [sample_name(first, 0)]
    assert json.loads((out / "manifest.json").read_text())["settings"]["dimension"] == ["color"]
    # progress: a bar over the videos, and the pipeline's over each video's steps
    err = capsys.readouterr().err
    assert "videos: 100%" in err and "1/1 [" in err and "steps:" in err


def test_compare_identical_and_constructed_pair(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    rng = np.random.default_rng(0)
    video = rng.random((3, 32, 32, 3))
    write_video(video, str(a / "v.npz"), 8)
    write_video(video, str(b / "v.npz"), 8)
    write_video(np.full((2, 24, 24, 3), 0.5), str(a / "flat.npz"), 8)
    write_video(np.full((2, 24, 24, 3), 0.6), str(b / "flat.npz"), 8)
    report = compare_dirs(str(a), str(b))
    rows = {r["name"]: r for r in report["videos"]}
    assert math.isinf(rows["v"]["psnr"]) and rows["v"]["ssim"] == pytest.approx(1.0)
    x, y = 128 / 255, 153 / 255  # 0.5 and 0.6 as stored in uint8
    assert rows["flat"]["psnr"] == pytest.approx(-20 * math.log10(y - x))
    c1 = 0.01**2
    assert rows["flat"]["ssim"] == pytest.approx((2 * x * y + c1) / (x * x + y * y + c1))
    assert "LPIPS" not in report["mean"] or report["mean"]["lpips"] is not None
    assert psnr(read_video(str(a / "v.npz")), read_video(str(b / "v.npz"))) == math.inf
    assert ssim(read_video(str(a / "v.npz")), read_video(str(a / "v.npz"))) == pytest.approx(1.0)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report.md").read_text().count("|") > 10
    # without --out: next to its inputs (the second folder), not the current folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["compare", str(a), str(b)]) == 0
    assert json.loads((b / "compare.json").read_text())["dir_b"] == str(b) and (b / "compare.md").exists()
    assert list(elsewhere.iterdir()) == []


def test_generate_image_to_video_through_the_pipelines_own_call(tmp_path, monkeypatch):
    """A HunyuanVideo-1.5 I2V folder: --image reaches the pipeline, its call gets only the settings
    it takes (no guidance_scale, no height/width), vecdit keeps its density."""
    import json

    import numpy as np
    import PIL.Image

    from vecdit.pipelines import generate
    from vecdit.pipelines.tiny import tiny_hunyuan15_pipeline

    folder = tmp_path / "HunyuanVideo-1.5-480p_i2v"
    folder.mkdir()
    image = tmp_path / "first.png"
    PIL.Image.fromarray((np.random.default_rng(0).random((128, 128, 3)) * 255).astype("uint8")).save(image)
    monkeypatch.setattr(generate, "load_pipeline", lambda *a, **k: tiny_hunyuan15_pipeline(image=True))
    out = tmp_path / "v.mp4"
    code = main(["generate", "--model", str(folder), "--image", str(image), "--prompt", "a fox", "--frames", "9",
                 "--steps", "2", "--dense-steps", "0", "--output", str(out)])
    assert code == 0 and out.stat().st_size > 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["settings"]["image"] == str(image)
    from vecdit.config import PRESET_DENSITY

    assert side["density"] == pytest.approx(PRESET_DENSITY, abs=0.02)


def test_pipeline_benchmark_smoke_run_on_the_tiny_model(tmp_path):
    """The whole path of `python -m vecdit.bench pipeline` on CPU (no timing is checked)."""
    import json

    from vecdit.bench.__main__ import main as bench

    assert bench(["pipeline", "--models", "tiny", "tiny-hunyuan", "--variants", "stock", "vecdit", "--device", "cpu",
                  "--steps", "10", "--repeats", "1", "--out", str(tmp_path)]) == 0
    results = json.loads(next(tmp_path.glob("pipeline-tiny-*.json")).read_text())["results"]
    assert [r["cfg_passes"] for r in results] == [2, 1]  # Wan's CFG; HunyuanVideo is guidance-distilled
    for result in results:
        assert sum(result["schedule"].values()) == 10 and result["schedule"]["dense"] == 1  # 6% of 10, rounded up
        assert set(result["runs"]) == {"stock", "vecdit"}
        assert result["runs"]["vecdit"]["step_s"]["dense"] == result["runs"]["stock"]["step_s"]["stock"]
        assert all(r["total_s"] > 0 for r in result["runs"].values())
    # the preset's density and tiles overridden from the command line, named in the file
    assert bench(["pipeline", "--models", "tiny", "--variants", "vecdit", "--device", "cpu", "--steps", "4",
                  "--repeats", "1", "--density", "0.5", "--query-tiles", "4x4x8", "--out", str(tmp_path)]) == 0
    result = json.loads(next(tmp_path.glob("pipeline-tiny-density-0.5-query-tiles-4x4x8-*.json")).read_text())["results"][0]
    assert result["config"]["density"] == 0.5 and result["config"]["query_tiles"] == [4, 4, 8]


def test_pipeline_benchmark_full_size_text_encoders_fit_the_transformer():
    """The full-size HunyuanVideo rig's text towers have the widths the transformer's defaults take
    (a 512-wide CLIP once failed only on the GPU, at the first step)."""
    import inspect

    from diffusers import HunyuanVideoTransformer3DModel

    from vecdit.bench.pipeline import hunyuan_clip_config

    defaults = inspect.signature(HunyuanVideoTransformer3DModel.__init__).parameters
    assert hunyuan_clip_config().hidden_size == defaults["pooled_projection_dim"].default
    assert defaults["text_embed_dim"].default == 4096  # the LLaMA-3-8B width the rig builds
