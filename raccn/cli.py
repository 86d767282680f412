"""The command line: a ``LightningCLI`` whose model and data are chosen by ``class_path``.

    python train.py fit     --config configs/ram_quickstart.yaml
    python train.py test    --config configs/ram_mnist.yaml --ckpt_path path/to.ckpt
    python train.py predict --config configs/ram_mnist.yaml --ckpt_path path/to.ckpt \
        --data.init_args.predict_paths '[a.png, b.jpg]'

Extra top-level option: ``test_after_fit`` (fit, then test the best checkpoint in the same
process; the quick start uses it). ``data.num_classes`` is linked to ``model.num_classes``.

Every run also gets two callbacks, whatever the config lists (options on the command line):
``eval_report`` (``raccn.callbacks.EvalReportWriter``: after testing, ``test_report.csv`` /
``.json`` in the run folder and the papers' accuracy table printed; ``--eval_report.filename``)
and ``predictions`` (``raccn.callbacks.PredictionWriter``: when predicting,
``predictions/predictions.csv`` and one attention picture per image; ``--predictions.pictures``,
``--predictions.upscale``). Do not list them in ``trainer.callbacks`` too.
"""

from __future__ import annotations

from lightning_fabric.utilities.rank_zero import rank_zero_info
from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from raccn.callbacks import EvalReportWriter, PredictionWriter
from raccn.runtime import skip_futile_nvml_probe, tune_cpu_allocator


class RaccnCLI(LightningCLI):
    """LightningCLI with the project's links, the ``test_after_fit`` switch and the report and
    prediction writers added to every run."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--test_after_fit", type=bool, default=False,
            help="After `fit`, run `test` on the best checkpoint (or the last weights).",
        )
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        # Callbacks added to every trainer (their hooks only run in `test` / `predict`).
        parser.add_lightning_class_args(EvalReportWriter, "eval_report")
        parser.add_lightning_class_args(PredictionWriter, "predictions")

    def _best_checkpoint(self) -> str | None:
        """The best checkpoint of the first ``ModelCheckpoint`` that monitors a metric (else of
        any, e.g. the one that keeps ``last.ckpt``); None when nothing was saved."""
        found = [cb for cb in self.trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.best_model_path]
        found.sort(key=lambda cb: cb.monitor is None)  # stable: config order among equals
        return found[0].best_model_path if found else None

    def after_fit(self) -> None:
        if not self.config.fit.get("test_after_fit"):
            return
        ckpt = self._best_checkpoint()
        rank_zero_info(f"Testing {'checkpoint ' + ckpt if ckpt else 'the final weights'}")
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)


def main(args=None, run: bool = True) -> RaccnCLI:
    """Build (and with ``run``, execute) the CLI; ``args`` defaults to ``sys.argv[1:]``."""
    tune_cpu_allocator()
    skip_futile_nvml_probe()
    return RaccnCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )
