"""Several processes (issue 21): RAM under Lightning's DDP on CPU (gloo, 2 processes, a
``train.py fit`` subprocess with the quick start and an EMA of the weights, which failed under DDP
before). The weights are identical across the processes and the training set is split between
them, no image in both but the one the sampler repeats for an odd count; the test after fit
draws its pictures and writes its report on rank 0 only (rank 0 alone used to enter
``Trainer.log_dir``'s broadcast there, and the run hung)."""

import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ram_under_ddp_with_ema_same_weights_split_data(tmp_path):
    record = tmp_path / "ranks"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]),
               OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    args = [sys.executable, os.path.join(ROOT, "train.py"), "fit",
            "--config", os.path.join(ROOT, "configs", "ram_quickstart.yaml"),
            "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2",
            "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--test_after_fit", "true",
            ('--trainer.callbacks+={"class_path": "pytorch_lightning.callbacks.EMAWeightAveraging", '
            '"init_args": {"decay": 0.9}}'),
            f'--trainer.callbacks+={{"class_path": "ddp_helpers.RankRecord", "init_args": {{"folder": "{record}"}}}}']
    out = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    ranks = [torch.load(record / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["global_step"] == ranks[1]["global_step"] == 3
    # the same weights in both processes (gradients all-reduced, the EMA updated alike)
    assert ranks[0]["weights"].keys() == ranks[1]["weights"].keys()
    assert all(torch.equal(v, ranks[1]["weights"][k]) for k, v in ranks[0]["weights"].items())
    # each process its own half of the (shuffled) training set: together every image, and in
    # both only the one Lightning's distributed sampler repeats to even out an odd count
    n = ranks[0]["size"]
    seen = [set(r["seen"]) for r in ranks]
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == (n + 1) // 2
    assert seen[0] | seen[1] == set(range(n)) and len(seen[0] & seen[1]) == n % 2
    # the test after fit: pictures and report by rank 0 alone, and the run did not hang
    tested = [torch.load(record / f"rank{r}_test.pt", weights_only=False)["written"] for r in (0, 1)]
    assert tested[0]["GlimpseTrajectoryWriter"] and tested[0]["EvalReportWriter"]
    assert all(os.path.exists(f if os.path.isabs(f) else tmp_path / f) for f in tested[0]["GlimpseTrajectoryWriter"])
    assert tested[1] == {"GlimpseTrajectoryWriter": [], "EvalReportWriter": []}
