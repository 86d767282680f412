"""The command line: a ``LightningCLI`` whose model and data are chosen by ``class_path``.

    python train.py fit  --config configs/ram_quickstart.yaml
    python train.py test --config configs/ram_mnist.yaml --ckpt_path path/to.ckpt

Extra top-level option: ``test_after_fit`` (fit, then test the best checkpoint in the same
process; the quick start uses it). ``data.num_classes`` is linked to ``model.num_classes``.
"""

from __future__ import annotations

from lightning_fabric.utilities.rank_zero import rank_zero_info
from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from raccn.runtime import tune_cpu_allocator


class RaccnCLI(LightningCLI):
    """LightningCLI with the project's links and the ``test_after_fit`` switch."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--test_after_fit", type=bool, default=False,
            help="After `fit`, run `test` on the best checkpoint (or the last weights).",
        )
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    def _best_checkpoint(self) -> str | None:
        for cb in self.trainer.callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.best_model_path:
                return cb.best_model_path
        return None

    def after_fit(self) -> None:
        if not self.config.fit.get("test_after_fit"):
            return
        ckpt = self._best_checkpoint()
        rank_zero_info(f"Testing {'checkpoint ' + ckpt if ckpt else 'the final weights'}")
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)


def main(args=None, run: bool = True) -> RaccnCLI:
    """Build (and with ``run``, execute) the CLI; ``args`` defaults to ``sys.argv[1:]``."""
    tune_cpu_allocator()
    return RaccnCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )
