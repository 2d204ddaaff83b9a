# Copyright 2026 The vecdit authors. Apache-2.0.
"""diffusers context parallelism (Ulysses) with VecAttnProcessor: 2 CPU processes over gloo."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vecdit import VecAttnConfig

CONFIG = dict(threshold=0.5, dense_steps=0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _leave():
    """Both ranks meet before the group goes: a rank tearing gloo down while the other's last
    collective is in flight aborted a clean-clone CI run once ("terminate called without an active
    exception", SIGABRT)."""
    dist.barrier()
    dist.destroy_process_group()


def _wan_inputs():
    g = torch.Generator().manual_seed(1)
    return dict(hidden_states=torch.randn(1, 4, 3, 16, 16, generator=g), timestep=torch.tensor([700.0]),
                encoder_hidden_states=torch.randn(1, 12, 16, generator=g), return_dict=False)


def _worker(rank, world, port, order, out_dir):
    from diffusers import ContextParallelConfig

    from vecdit.pipelines.tiny import tiny_wan_transformer
    from vecdit.processors import VecAttnProcessor

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # diffusers picks the device as rank % accelerator count, which is 0 on a CPU-only machine
    torch.accelerator.device_count = lambda: 1
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = tiny_wan_transformer()
        cp = ContextParallelConfig(ring_degree=2) if order == "ring" else ContextParallelConfig(ulysses_degree=2)
        if order == "before":
            model.set_attn_processor(VecAttnProcessor(VecAttnConfig(**CONFIG)))
            model.enable_parallelism(config=cp)
        else:
            model.enable_parallelism(config=cp)
            model.set_attn_processor(VecAttnProcessor(VecAttnConfig(**CONFIG)))
        try:
            with torch.no_grad():
                result = model(**_wan_inputs())[0]
        except ValueError as e:
            result = str(e)
        if rank == 0:
            torch.save(result, os.path.join(out_dir, f"{order}.pt"))
    finally:
        _leave()


def _run(order, tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), order, str(tmp_path)), nprocs=2, join=True)
    return torch.load(os.path.join(tmp_path, f"{order}.pt"))


@pytest.fixture(scope="module")
def single_process_output():
    from vecdit.pipelines.tiny import tiny_wan_transformer
    from vecdit.processors import VecAttnProcessor

    model = tiny_wan_transformer()
    model.set_attn_processor(VecAttnProcessor(VecAttnConfig(**CONFIG)))
    with torch.no_grad():
        return model(**_wan_inputs())[0]


@pytest.mark.parametrize("order", ["before", "after"])
def test_ulysses_matches_single_process_in_either_install_order(order, tmp_path, single_process_output):
    out = _run(order, tmp_path)
    assert isinstance(out, torch.Tensor), out
    assert torch.allclose(out, single_process_output, atol=1e-4, rtol=1e-4)


def test_ring_raises_a_clear_error(tmp_path):
    message = _run("ring", tmp_path)
    assert isinstance(message, str) and "ulysses_degree" in message


def _generate_worker(rank, world, port, out_dir):
    from vecdit.pipelines.cli import main

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), HF_HUB_OFFLINE="1")
    torch.accelerator.device_count = lambda: 1  # see _worker
    code = main(["generate", "--model", "tiny-random", "--ulysses", str(world), "--prompt", "a red fox", "--steps", "3",
                 "--dense-steps", "1", "--threshold", "0.5", "--output", os.path.join(out_dir, "ulysses.npz")])
    assert code == 0
    _leave()


def test_generate_with_ulysses_matches_one_process(tmp_path):
    from vecdit.pipelines.cli import main
    from vecdit.samples.video_io import read_video

    argv = ["generate", "--model", "tiny-random", "--prompt", "a red fox", "--steps", "3", "--dense-steps", "1",
            "--threshold", "0.5", "--output"]
    assert main(argv + [str(tmp_path / "single.npz")]) == 0
    mp.spawn(_generate_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single, ulysses = read_video(str(tmp_path / "single.npz")), read_video(str(tmp_path / "ulysses.npz"))
    assert single.shape == ulysses.shape == (9, 128, 128, 3)
    assert abs(single.astype(int) - ulysses.astype(int)).max() <= 2
    assert main(argv + [str(tmp_path / "x.npz"), "--ulysses", "2"]) == 2  # not launched by torchrun


def _hunyuan_inputs():
    g = torch.Generator().manual_seed(1)
    mask = torch.zeros(1, 10, dtype=torch.long)
    mask[:, :7] = 1
    return dict(hidden_states=torch.randn(1, 4, 3, 8, 8, generator=g), timestep=torch.tensor([700]),
                encoder_hidden_states=torch.randn(1, 10, 16, generator=g), encoder_attention_mask=mask,
                pooled_projections=torch.randn(1, 8, generator=g), guidance=torch.tensor([3500.0]), return_dict=False)


def _hunyuan_worker(rank, world, port, out_dir):
    from diffusers import ContextParallelConfig

    from vecdit.parallel import enable_context_parallel
    from vecdit.pipelines.tiny import tiny_hunyuan_transformer
    from vecdit.processors import VecAttnProcessor, family_of

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.accelerator.device_count = lambda: 1  # see _worker
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = tiny_hunyuan_transformer()
        model.set_attn_processor(VecAttnProcessor(VecAttnConfig(**CONFIG)))
        enable_context_parallel(model, ContextParallelConfig(ulysses_degree=2), family_of(model))
        with torch.no_grad():
            out = model(**_hunyuan_inputs())[0]
        if rank == 0:  # the gathered output is an async collective tensor: materialize it
            torch.save(torch.from_numpy(out.numpy().copy()), os.path.join(out_dir, "hunyuan.pt"))
    finally:
        _leave()


def test_hunyuan_ulysses_with_vecdit_plan_matches_single_process(tmp_path):
    from vecdit.pipelines.tiny import tiny_hunyuan_transformer
    from vecdit.processors import VecAttnProcessor

    model = tiny_hunyuan_transformer()
    model.set_attn_processor(VecAttnProcessor(VecAttnConfig(**CONFIG)))
    with torch.no_grad():
        single = model(**_hunyuan_inputs())[0]
    mp.spawn(_hunyuan_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    out = torch.load(os.path.join(tmp_path, "hunyuan.pt"))
    assert out.shape == single.shape
    assert torch.allclose(out, single, atol=1e-4, rtol=1e-4)
