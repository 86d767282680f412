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


def test_zoo_cost_rows_against_the_blocks_own_parameters_and_multiply_adds(capsys):
    """Tiny run (batch 2, 72-px images, one round): one JSON line per row, the plain row's step
    ratio 1; SE adds exactly its blocks' parameters and multiply-adds (two 1x1 convolutions on
    the pooled C channels: 2 C C/r per block per image) in both trunks; AG-CNN has a step per
    stage and their mean weighted by its stage lengths."""
    import json
    bench = load_benchmark("zoo_cost")
    bench.main(["--rows", "se", "agcnn", "--batch", "2", "--image", "72", "--rounds", "1"])
    rows = {r["row"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert list(rows) == ["plain", "se", "agcnn"]
    assert rows["plain"]["step_ratio"] == 1.0 and rows["plain"]["rank_step_ratio"] > 0
    from raccn.layers import build_attention
    blocks = [build_attention("se", c) for c in (32, 64, 128, 256)]  # after each small_vgg_bn stage
    added_params = 2 * sum(p.numel() for b in blocks for p in b.parameters())  # two trunks
    added_macs = 2 * sum(2 * b.fc1.in_channels * b.fc1.out_channels for b in blocks)
    assert rows["se"]["params"] - rows["plain"]["params"] == added_params
    assert rows["se"]["macs_per_image"] - rows["plain"]["macs_per_image"] == added_macs
    ag = rows["agcnn"]
    stages = [ag[f"{s}_step_ratio"] for s in ("global", "local", "fusion")]
    assert min(stages) <= ag["step_ratio"] <= max(stages) and all(r > 0 for r in stages)


def test_zoo_cost_counts_sasa_products_the_flop_counter_misses():
    """FlopCounterMode sees SASA's three 1x1 projections (3 C C per pixel) and its relative
    logits (einsums of q with the k row and the k column embeddings, 2 C k per pixel); its q·k
    and weighted sum (C k^2 multiply-adds per pixel each) come from the benchmark's own count."""
    from raccn.layers import LocalSelfAttention2d
    bench = load_benchmark("zoo_cost")
    m, x = LocalSelfAttention2d(8, heads=2, kernel_size=3), torch.rand(2, 8, 5, 7)
    counted, extra = bench.macs(m, x)
    assert counted == (3 * 8 * 8 + 2 * 8 * 3) * 35 and extra == 2 * 8 * 9 * 35


def test_dram_cost_counts_the_glimpse_samples_and_the_cnn_convolutions(tmp_path, capsys):
    """``dram_cost.py`` at tiny sizes: DRAM's multiply-adds do not depend on the canvas and
    include the glimpse op's bilinear samples (4 per value: 6 glimpses x 3 scales x 16x16),
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
    assert dram[0]["grid_sample_macs"] == 6 * 3 * 16 * 16 * 4 and cnn[0]["grid_sample_macs"] == 0
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
