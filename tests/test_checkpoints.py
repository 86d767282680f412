"""Publishable checkpoints: weights and hyper-parameters kept, optimiser state dropped."""

import pytest
import pytorch_lightning as pl
import torch

from raccn.checkpoints import strip_checkpoint
from raccn.lit import RAMLitModule


def test_strip_keeps_weights_and_drops_optimizer_state(tmp_path):
    from test_ram_learning import CornerData

    model = RAMLitModule(num_classes=4, glimpses=2, patch_size=4, glimpse_hidden=8, glimpse_dim=8, hidden_size=8)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=CornerData())
    full = tmp_path / "full.ckpt"
    trainer.save_checkpoint(full)
    small = strip_checkpoint(str(full), str(tmp_path / "small.ckpt"))
    assert "optimizer_states" in torch.load(full, weights_only=False)
    assert "optimizer_states" not in small and (tmp_path / "small.ckpt").stat().st_size < full.stat().st_size
    loaded = RAMLitModule.load_from_checkpoint(tmp_path / "small.ckpt")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert loaded.hparams.patch_size == 4

    dropped = strip_checkpoint(str(full), str(tmp_path / "d.ckpt"), drop_hparams=["mc_samples"])
    assert "mc_samples" not in dropped["hyper_parameters"]
    with pytest.raises(ValueError, match="no hyper-parameter"):
        strip_checkpoint(str(full), str(tmp_path / "e.ckpt"), drop_hparams=["nope"])
    with pytest.raises(ValueError, match="must differ"):
        strip_checkpoint(str(full), str(full))
