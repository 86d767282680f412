"""The benchmarks' stand-ins compute the same thing as the package (so their timings compare)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from raccn.ops import glimpse

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import each other from their folder
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.parametrize("indexing", ["ints", "tensors"])
def test_public_style_retina_equals_the_glimpse_op_at_whole_pixels(indexing):
    """The public-style per-sample retina of ``ram_vs_public_style.py`` extracts the same patches
    as ``raccn.ops.glimpse`` where both are exact (centres on whole pixels, even sides), with
    either way of reading the slice bounds."""
    bench = load_benchmark("ram_vs_public_style")
    torch.manual_seed(0)
    images = torch.rand(16, 1, 64, 64)  # 64: the centres k / 32 - 1 are exact in floating point
    loc = torch.randint(0, 65, (16, 2)).float() / 32 - 1  # centres on whole pixels, edges included
    ours = glimpse(images, loc, 12, 3, 2.0).flatten(1)
    theirs = bench.public_style_retina(images, loc, 12, 3, indexing)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


def test_public_style_model_trains_one_step():
    bench = load_benchmark("ram_vs_public_style")

    class Args:
        patch, scales, hidden, glimpses, public_indexing = 8, 1, 32, 3, "tensors"

    torch.manual_seed(0)
    images, target = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    step = bench.public_style_step(Args, images, target)
    step()  # forward, loss, backward, Adam: runs without error on the 28x28 work


def test_apn_pretrain_lr_reports_each_case_and_adam_reaches_the_target(capsys):
    """One line per (feature scale, optimiser); on a small trunk (its random-init features
    scaled by 1000 to a mean of ~0.1), Adam at 1e-4 (the paper configs' APN optimiser) moves
    the box toward the pre-training target, SGD at the paper's 1e-6 leaves it where it starts."""
    import json
    bench = load_benchmark("apn_pretrain_lr")
    bench.main(["--backbone", "small_vgg_bn", "--size", "64", "--apn-hidden", "32", "--apn-pool", "3",
                "--steps", "150", "--feature-scales", "1000", "--optimisers", "sgd1e-6", "adam1e-4",
                "--threads", "1"])
    rows = {r["optimiser"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(rows) == {"sgd1e-6", "adam1e-4"}
    assert rows["sgd1e-6"]["loss_end"] > 0.99 * rows["sgd1e-6"]["loss_start"]
    assert rows["adam1e-4"]["loss_end"] < 0.5 * rows["adam1e-4"]["loss_start"]
    assert rows["adam1e-4"]["box_error_px"] < 0.5 * rows["sgd1e-6"]["box_error_px"]


def test_dram_cost_counts_the_glimpse_samples_and_the_cnn_convolutions(tmp_path, capsys):
    """``dram_cost.py`` at tiny sizes: DRAM's multiply-adds do not depend on the canvas and
    include the glimpse op's bilinear samples (4 per value: 6 glimpses x 3 scales x 12x12),
    which FlopCounterMode alone misses; the CNN's are its convolutions and linear layers, counted
    by hand; the plot is written."""
    import json

    from PIL import Image
    bench = load_benchmark("dram_cost")
    plot = tmp_path / "cost.png"
    rows = bench.main(["--canvases", "32", "48", "--batch", "2", "--steps", "1", "--rounds", "1",
                       "--plot", str(plot)])
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == rows
    dram = [r for r in rows if r["model"] == "dram"]
    cnn = [r for r in rows if r["model"] == "cnn"]
    assert dram[0]["macs"] == dram[1]["macs"] and dram[0]["params"] == dram[1]["params"]
    assert dram[0]["grid_sample_macs"] == 6 * 3 * 12 * 12 * 4 and cnn[0]["grid_sample_macs"] == 0
    assert cnn[0]["params"] == cnn[1]["params"]

    def by_hand(side: int) -> int:  # channels 32, 32, 64, 64; kernels 5, 3, 3, 3; 2x2 pools
        macs, c_in = 0, 1
        for c, k in zip((32, 32, 64, 64), (5, 3, 3, 3)):
            macs += k * k * c_in * c * side * side
            c_in, side = c, side // 2
        return macs + 64 * 6 * 6 * 256 + 256 * 3 * 11  # fc on the 6x6 grid, 3 heads of 11

    assert [r["macs"] for r in cnn] == [by_hand(32), by_hand(48)]
    assert all(r["train_ips"] > 0 and r["infer_ips"] > 0 for r in rows) and dram[0]["infer_mc_ips"] > 0
    assert Image.open(plot).size == (960, 360)


def test_dram_svhn_profile_reports_every_share(capsys):
    import json
    bench = load_benchmark("dram_svhn_profile")
    result = bench.main(["--batch", "4", "--steps", "1", "--repeats", "1", "--threads", "1",
                         "--net", '{"hidden_size": 32, "conv_channels": [8, 8, 8], "glimpse_dim": 32}'])
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == result
    assert result["glimpses"] == 15 and result["channels"] == 3  # the config's 5 slots x 3 glimpses, RGB
    for part in ("glimpse_op", "glimpse_convnet", "context", "lstm", "optimizer"):
        assert 0 < result[f"{part}_share"] < 1, part
    assert 0.3 < result["parts_sum"] < 1.5 and result["lightning_ips"] > 0
