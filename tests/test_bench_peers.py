# Copyright 2026 The vecdit authors. Apache-2.0.
"""The peers benchmark's CPU side: output errors in both metrics, the time at equal output error,
SpargeAttn's wrapper (a stand-in module), the whole comparison on the tiny proxy, the VSA module check,
SpargeAttn's narrowed build sources and bench/gpu_session.sh's steps."""
import json
import math
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vecdit.bench import peers
from vecdit.lab.synthetic import GEOMETRIES, SyntheticConfig, structured_qkv

ROOT = Path(__file__).resolve().parents[1]
TINY = GEOMETRIES["tiny"][0]  # (3, 8, 8): the structured proxy's grid, 192 tokens


def _sdpa_nhd(q, k, v):
    return F.scaled_dot_product_attention(*(x.transpose(1, 2).float() for x in (q, k, v))).transpose(1, 2)


def test_output_errors_in_both_metrics():
    ref = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    got = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    e = peers.output_errors(got, ref)
    assert e["error"] == pytest.approx(0.5)  # rows: |(0, 1)| / |(1, 0)| = 1 and 0
    assert e["error_l1"] == pytest.approx(1 / 3)  # SpargeAttn's: sum |diff| / sum |ref|


def test_time_at_error_interpolates_on_the_fastest_settings():
    pts = [(0.1, 10.0), (0.4, 2.5), (0.2, 5.0), (0.15, 12.0)]  # (0.15, 12) is slower than a more accurate setting
    got = peers.time_at_error(pts, math.sqrt(0.1 * 0.2))  # halfway in log error between 0.1 and 0.2
    assert got["how"] == "interpolated" and got["ms"] == pytest.approx(7.5)
    assert got["between"] == [[0.1, 10.0], [0.2, 5.0]]
    assert peers.time_at_error(pts, 0.2)["ms"] == pytest.approx(5.0)
    assert peers.time_at_error(pts, 0.05) == {"ms": None, "how": "not reached", "best_error": 0.1}
    assert peers.time_at_error(pts, 0.9) == {"ms": 2.5, "how": "at most"}  # bounded by its sparsest setting
    assert peers.time_at_error([(0.01, 300.0)], 0.1) == {"ms": 300.0, "how": "one setting"}  # a dense method


def test_equal_error_table_gives_vecdits_fraction_of_each_peers_time():
    rows = [{"method": peers.VECDIT, "target_density": 0.25, "density": 0.25, "ms": 4.0, "error": 0.1,
             "error_l1": 0.09},
            {"method": peers.VECDIT, "target_density": 0.1, "density": 0.1, "ms": 2.0, "error": 0.2, "error_l1": 0.18},
            {"method": "peer", "target_density": 0.4, "density": 0.4, "ms": 10.0, "error": 0.1, "error_l1": 0.1},
            {"method": "peer", "target_density": 0.1, "density": 0.1, "ms": 5.0, "error": 0.3, "error_l1": 0.3},
            {"method": "dense", "target_density": 1.0, "density": 1.0, "ms": 20.0, "error": 0.01, "error_l1": 0.01},
            {"method": "broken", "target_density": 0.1, "error_message": "no GPU"}]
    table = {(e["level"], e["peer"]): e for e in peers.equal_error(rows)}
    assert set(table) == {(0.25, "peer"), (0.25, "dense"), (0.1, "peer"), (0.1, "dense")}
    assert table[(0.25, "peer")]["fraction"] == pytest.approx(0.4) and table[(0.25, "dense")]["fraction"] == 0.2
    t = 10.0 + (math.log(0.2) - math.log(0.1)) / (math.log(0.3) - math.log(0.1)) * (5.0 - 10.0)
    assert table[(0.1, "peer")]["fraction"] == pytest.approx(2.0 / t)
    l1 = {(e["level"], e["peer"]): e for e in peers.equal_error(rows, "error_l1")}
    assert l1[(0.25, "peer")]["how"] == "not reached" and l1[(0.25, "peer")]["fraction"] is None


@pytest.fixture
def fake_sparge(monkeypatch):
    """A stand-in `spas_sage_attn`: plain attention, and a block map keeping the first `topk` of the
    key blocks (or the first half under a CDF threshold), as its utils return it."""
    calls = []

    def block_map(q, k, km=None, is_causal=False, BLKQ=128, BLKK=64, simthreshd1=0.1, cdfthreshd=0.9, topk=None,
                  is_sparse=True, return_lut=False, attention_sink=False):
        nq, nk = -(-q.shape[-2] // BLKQ), -(-k.shape[-2] // BLKK)
        keep = max(1, int((topk if topk is not None else 0.5) * nk))
        m = torch.zeros(q.shape[0], q.shape[1], nq, nk, dtype=torch.bool)
        m[..., :keep] = True
        return m, None, None, None, None

    def attend(q, k, v, tensor_layout="HND", return_sparsity=False, **kwargs):
        assert tensor_layout == "NHD"
        calls.append(kwargs)
        out = _sdpa_nhd(q, k, v).to(q.dtype)
        return (out, 0.75) if return_sparsity else out

    module = types.ModuleType("spas_sage_attn")
    module.spas_sage2_attn_meansim_topk_cuda = module.spas_sage2_attn_meansim_cuda = attend
    utils = types.ModuleType("spas_sage_attn.utils")
    utils.get_block_map_meansim_fuse_quant = block_map
    module.utils = utils
    monkeypatch.setitem(sys.modules, "spas_sage_attn", module)
    monkeypatch.setitem(sys.modules, "spas_sage_attn.utils", utils)
    return calls


def _proxy(heads=2):
    return tuple(x.to(torch.bfloat16) for x in structured_qkv(SyntheticConfig(geometry="tiny", heads=heads,
                                                                              head_dim=128)))


def test_sparge_wrapper_records_its_density_recall_and_error(fake_sparge, monkeypatch):
    monkeypatch.setattr(peers, "do_bench_ms", lambda fn: (fn(), 1.0)[1])
    q, k, v = _proxy()
    reference = peers.DenseRows(q, k, v, heads=2)
    row = peers._sparge(q, k, v, 0.25, "topk", 2, reference)
    assert fake_sparge[0] == {"topk": 0.25}
    assert row["reported_density"] == 0.25  # 1 - the sparsity it returns
    blkq, blkk = peers.sparge_blocks()
    nk = -(-k.shape[1] // blkk)
    assert row["block_density"] == pytest.approx(max(1, int(0.25 * nk)) / nk)
    assert 0 < row["recall"] <= 1 and 0 < row["density"] < 1
    assert row["error"] < 0.02 and row["error_l1"] < 0.02  # plain attention, up to bf16
    peers._sparge(q, k, v, 0.9, "cdf", 2, reference)
    assert fake_sparge[-1] == {"cdfthreshd": 0.9}


def test_compare_on_the_tiny_proxy_ranks_vecdit_by_output_error(fake_sparge, monkeypatch):
    monkeypatch.setattr(peers, "do_bench_ms", lambda fn: (fn(), 1.0)[1])
    q, k, v = _proxy()
    res = peers.compare(q, k, v, TINY, densities=(0.5, 0.25), heads_sampled=2, methods=("vecdit", "sparge", "dense"),
                        sparge_cdf=(0.9,), dense={"cudnn": _sdpa_nhd}, log=lambda s: None)
    rows = {(r["method"], r["target_density"]): r for r in res["rows"]}
    assert set(rows) == {("cuDNN (dense)", 1.0), (peers.VECDIT, 0.5), (peers.VECDIT, 0.25), (peers.VECDIT, 0.1),
                         ("SpargeAttn top-k", 0.5), ("SpargeAttn top-k", 0.25), ("SpargeAttn cdf", 0.9)}
    assert rows[("cuDNN (dense)", 1.0)]["error"] < 1e-6
    errs = [rows[(peers.VECDIT, d)]["error"] for d in (0.5, 0.25, 0.1)]
    assert errs == sorted(errs) and 0 < errs[0]  # less kept, more error (compensated)
    assert all(rows[(peers.VECDIT, d)]["compensate"] is True for d in (0.5, 0.25, 0.1))
    assert res["rows_sampled"] == 2 * q.shape[1] and res["dense"]["cudnn_ms"] == 1.0
    assert {e["metric"] for e in res["equal_error"]} == {"error", "error_l1"}
    assert {e["level"] for e in res["equal_error"]} == set(peers.LEVELS)
    md = peers.peers_markdown({"card": "cpu", "torch": "", "triton": "", "date": ""},
                              [{"shape": "tiny", "inputs": "structured", **res}])
    assert "Speed at equal output error" in md and "SpargeAttn cdf" in md


def _fake_fastvideo_kernel(root: Path):
    pkg = root / "fastvideo_kernel"
    pkg.mkdir()
    # as the real package: its __init__ rebinds the submodule's name to the function of that name
    (pkg / "__init__.py").write_text("from fastvideo_kernel.block_sparse_attn import block_sparse_attn\n")
    (pkg / "block_sparse_attn.py").write_text(
        "def block_sparse_attn(*args):\n    pass\n\n\ndef _get_sm90_ops():\n    return (None, None)\n\n\n"
        "def _is_sm90():\n    return False\n\n\ndef _force_triton():\n    return False\n")


def test_vsa_check_reads_the_module_not_its_function(tmp_path, monkeypatch):
    from vecdit.bench import peer_check

    _fake_fastvideo_kernel(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("fastvideo_kernel", "fastvideo_kernel.block_sparse_attn"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import fastvideo_kernel.block_sparse_attn as attribute  # what the old check read: the function

    assert callable(attribute) and not hasattr(attribute, "_get_sm90_ops")
    assert peer_check.vsa_module()._get_sm90_ops() == (None, None)
    lines = peer_check.check_peers()
    assert any(line.startswith("VSA sm90 ops (None, None)") for line in lines), lines
    for name in ("fastvideo_kernel", "fastvideo_kernel.block_sparse_attn"):
        sys.modules.pop(name, None)


def _steps(script: str) -> dict:
    """{step: its body} of gpu_session.sh's case statement."""
    body = script[script.index('case $step in'):]
    return {m.group(1): m.group(2) for m in re.finditer(r"\n    ([\w-]+)\)(.*?);;", body, re.S)}


def test_gpu_session_peer_steps_run_from_tmp_and_check_the_module():
    steps = _steps((ROOT / "bench" / "gpu_session.sh").read_text())
    for step in ("peers", "peers-build", "pipeline"):
        # every python module run of these steps imports the mapped subpackages: from /tmp, not the repository
        for line in re.findall(r".*python3 -m vecdit.*", steps[step]):
            assert "(cd /tmp &&" in line, (step, line)
    assert "import fastvideo_kernel.block_sparse_attn as" not in steps["peers-build"]
    assert "vecdit.bench peers-check" in steps["peers-build"]
    assert "build_peers.py sparge --src .peers/SpargeAttn" in steps["peers-build"]
    assert steps["peers-build"].count(" &\n") >= 3  # the three builds in parallel


def test_gpu_session_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_session.sh")]).returncode == 0


@pytest.mark.skipif(not (ROOT / ".peers" / "SpargeAttn" / "setup.py").exists(),
                    reason="the SpargeAttn snapshot (.peers/SpargeAttn, git-ignored) is not here")
def test_sparge_build_compiles_only_the_sm90_hd128_bf16_noncausal_kernels(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import build_peers
    finally:
        sys.path.remove(str(ROOT / "bench"))
    src = tmp_path / "SpargeAttn"
    shutil.copytree(ROOT / ".peers" / "SpargeAttn", src)
    insts = build_peers.sparge_instantiations(src)
    assert len(insts) == 9  # 3 QK granularities x (PV threshold off, on, on with its counts)
    for path in insts:
        assert "_hd128_" in path.name and "_onv_bfloat16_" in path.name and "_causal0_" in path.name
        assert re.search(r"SpargeAttentionSM90Dispatched<64, 128, 128, 128, \d, \d, nv_bfloat16, false, true, "
                         r"(true|false)>", path.read_text())
    dispatcher = build_peers.sparge_dispatcher(src, tmp_path / "build").read_text()
    assert dispatcher.count("#undef DISPATCH_") == 3 and "if (head_dim == 128)" in dispatcher
    assert '#include "pytorch_extensions_utils.cuh"' in dispatcher and "../" not in dispatcher.split("#undef")[0]
    assert "is_causal == 0" in dispatcher and "BFloat16" in dispatcher
    # the binding names exactly the two sm90 entry points core.py calls on Hopper
    core = (src / "spas_sage_attn" / "core.py").read_text()
    for name in re.findall(r'm\.def\("(\w+)"', build_peers.SPARGE_BINDING):
        assert name.endswith("_sm90") and name in dispatcher
    assert "qattn.qk_int8_sv_f8_accum_f32_block_sparse_attn_inst_buf_fuse_v_scale_with_pv_threshold_sm90(" in core


def test_build_peers_reports_a_failed_build_as_a_json_row(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0a")  # what main would set for the rest of the session
    monkeypatch.setenv("MAX_JOBS", "1")
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import build_peers
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert build_peers.main(["sparge", "--src", str(tmp_path / "missing"), "--dest", str(tmp_path / "out")]) == 1
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["peer"] == "sparge" and row["ok"] is False and "missing" in row["error"]
