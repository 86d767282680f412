"""The command line: a ``LightningCLI`` whose model and data are chosen by ``class_path``.

    python train.py fit     --config configs/ram_quickstart.yaml
    python train.py test    --config configs/ram_mnist.yaml --ckpt_path path/to.ckpt
    python train.py predict --config configs/ram_mnist.yaml --ckpt_path path/to.ckpt \
        --data.init_args.predict_paths '[a.png, b.jpg]'

Extra top-level options: ``test_after_fit`` (fit, then test a checkpoint in the same process;
the quick start uses it) and ``test_ckpt`` (which one: ``best`` by the monitored metric, or
``last``). ``data.num_classes`` is linked to the injected network's ``num_classes``
(``model.init_args.net.init_args.num_classes``).

Every run also gets these callbacks, whatever the config lists (options on the command line):
``eval_report`` (``raccn.callbacks.EvalReportWriter``: after testing, ``test_report.csv`` /
``.json`` in the run folder and the papers' accuracy table printed; ``--eval_report.filename``),
``predictions`` (``raccn.callbacks.PredictionWriter``: when predicting,
``predictions/predictions.csv`` and one attention picture per image; ``--predictions.pictures``,
``--predictions.upscale``), ``resume_state`` (``raccn.callbacks.ResumeState``: the random streams
in every checkpoint, so that ``fit --ckpt_path`` resumes exactly), ``interrupt_checkpoint``
(``raccn.callbacks.InterruptCheckpoint``: on SIGTERM or Ctrl-C, ``interrupted.ckpt`` beside
``last.ckpt``), ``non_finite`` (``raccn.callbacks.NonFiniteGuard``: steps with a non-finite
loss or gradient skipped and counted, ``--non_finite.max_consecutive`` in a row stop training)
and ``buffer_sync`` (``raccn.callbacks.BufferSync``: under DDP, every process evaluates with rank
0's batch-norm statistics and ends training with them).
Do not list them in ``trainer.callbacks`` too. Checkpoints are written atomically
(``raccn.atomic_checkpoint_io``) unless ``trainer.plugins`` names another ``CheckpointIO``.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from typing import Literal

from lightning_fabric.plugins import CheckpointIO
from lightning_fabric.utilities.rank_zero import rank_zero_info
from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.callbacks import ModelCheckpoint, WeightAveraging
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities.exceptions import SIGTERMException

from raccn.atomic_checkpoint_io import AtomicCheckpointIO
from raccn.callbacks import (
    BufferSync,
    EvalReportWriter,
    InterruptCheckpoint,
    NonFiniteGuard,
    PredictionWriter,
    ResumeState,
)
from raccn.checkpoint_match import check_model_classes, check_num_classes, read_hparams
from raccn.runtime import skip_futile_nvml_probe, tune_cpu_allocator


class RaccnCLI(LightningCLI):
    """LightningCLI with the project's links, the ``test_after_fit`` switch and the report and
    prediction writers added to every run."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--test_after_fit", type=bool, default=False,
            help="After `fit`, run `test` on the checkpoint chosen by `test_ckpt`.",
        )
        parser.add_argument(
            "--test_ckpt", type=Literal["best", "last"], default="best",
            help="What `test_after_fit` tests: `best` (the monitored ModelCheckpoint's best) or "
                 "`last` (the unmonitored one's latest, e.g. last.ckpt); the final weights when "
                 "none was saved. Use `last` when validation runs on the test split.",
        )
        # the modules receive their network (model.init_args.net); the data sets its class count
        parser.link_arguments("data.num_classes", "model.init_args.net.init_args.num_classes", apply_on="instantiate")
        # Callbacks added to every trainer (their hooks only run in `test` / `predict`).
        parser.add_lightning_class_args(EvalReportWriter, "eval_report")
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        # the random streams in every checkpoint, so that `fit --ckpt_path` resumes exactly
        parser.add_lightning_class_args(ResumeState, "resume_state")
        # SIGTERM / Ctrl-C: stop after the current step, write interrupted.ckpt beside last.ckpt
        parser.add_lightning_class_args(InterruptCheckpoint, "interrupt_checkpoint")
        # a step with a non-finite loss or gradient is skipped; too many in a row stop training
        parser.add_lightning_class_args(NonFiniteGuard, "non_finite")
        # under DDP, evaluation and the end of training with rank 0's batch-norm statistics
        parser.add_lightning_class_args(BufferSync, "buffer_sync")

    def _ckpt_path(self) -> str | None:
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        return path if path and os.path.isfile(path) else None

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Also keep the command line's ``--model.init_args.<key>`` names (:meth:`_parse_ckpt_path`)."""
        given = sys.argv[1:] if args is None else args if isinstance(args, (list, tuple)) else []
        self._model_args_given = {a.split("=", 1)[0][len("--model.init_args."):]
                                  for a in given if isinstance(a, str) and a.startswith("--model.init_args.")}
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Refuse a checkpoint of another model or network class than the config's, naming
        both (Lightning's parse, which follows, would silently swap in the checkpoint's model).
        Lightning's parse then puts the checkpoint's hyper-parameters over the config's; a
        setting outside ``net`` given on the command line wins again (e.g. ``test
        --model.init_args.mc_samples 10`` evaluates with 10 rollouts; it was silently dropped
        before), said in a line; one of ``net`` cannot (the weights need the checkpoint's) and
        a warning says it is not used."""
        self._ckpt_hparams = None
        path = self._ckpt_path()
        if path is None:
            return super()._parse_ckpt_path()
        self._ckpt_hparams = read_hparams(path)
        subcommand = self.config.subcommand
        check_model_classes(path, self._ckpt_hparams, self.config[subcommand].model)
        asked = self.config[subcommand].model.clone()
        super()._parse_ckpt_path()
        model = self.config[subcommand].model
        for key in sorted(getattr(self, "_model_args_given", ())):
            value, got = asked.get(f"init_args.{key}"), model.get(f"init_args.{key}")
            if got == value:
                continue
            if key.startswith("net"):
                warnings.warn(f"{subcommand} --ckpt_path {path}: --model.init_args.{key}={value!r} not used, "
                              f"the network is the checkpoint's ({got!r})", stacklevel=2)
            else:
                model[f"init_args.{key}"] = value
                rank_zero_info(f"{subcommand}: model.init_args.{key}={value!r} from the command line (the "
                               f"checkpoint {os.path.basename(path)} has {got!r})")

    def after_instantiate_classes(self) -> None:
        """Refuse a checkpoint trained for another number of classes than the data has."""
        super().after_instantiate_classes()
        if getattr(self, "_ckpt_hparams", None) is not None:
            check_num_classes(self._ckpt_path(), self._ckpt_hparams, self.datamodule)

    def before_instantiate_classes(self) -> None:
        """Name the run after its config files: a logger left without a name (CSVLogger's
        ``lightning_logs``, W&B's null) and an unset ``trainer.default_root_dir`` take the
        config files' stems joined by ``+`` (``runs/racnn_cub``, ``runs/racnn_quickstart+no_rank``),
        so one shared trainer file (``configs/racnn/trainer.yaml``) serves every data set."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        paths = (config or {}).get("config") or []
        if not paths:
            return
        name = "+".join(os.path.splitext(os.path.basename(os.fspath(p.relative)))[0] for p in paths)
        trainer = config.trainer
        loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
        for logger in loggers:
            init = getattr(logger, "init_args", None)
            if init is not None and init.get("name") in (None, "lightning_logs"):
                init.name = name
        if trainer.get("default_root_dir") is None:
            trainer.default_root_dir = os.path.join("runs", name)

    def instantiate_trainer(self, **kwargs):
        """The trainer, writing checkpoints atomically (``AtomicCheckpointIO``) unless the config
        names another ``CheckpointIO`` in ``trainer.plugins``."""
        config = self.config_init.get(str(self.subcommand), self.config_init)
        plugins = config.get("trainer", {}).get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

    def _best_checkpoint(self, which: str = "best") -> str | None:
        """``best``: the best checkpoint of the first ``ModelCheckpoint`` that monitors a metric
        (else of any, e.g. the one that keeps ``last.ckpt``); ``last``: the latest of the first
        one that monitors nothing (else of any). None when nothing was saved."""
        found = [cb for cb in self.trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.best_model_path]
        found.sort(key=lambda cb: (cb.monitor is None) == (which == "best"))  # stable: config order among equals
        return found[0].best_model_path if found else None

    def after_fit(self) -> None:
        if not self.config.fit.get("test_after_fit"):
            return
        ckpt = self._best_checkpoint(self.config.fit.get("test_ckpt", "best"))
        rank_zero_info(f"Testing {'checkpoint ' + ckpt if ckpt else 'the final weights'}")
        # A weight-averaging callback (EMA) still holds fit's averaged model, and on loading the
        # checkpoint it would put the raw weights (``current_model_state``) back in. The
        # checkpoint's ``state_dict`` holds the averaged weights, the ones validation scored and
        # ``train.py test --ckpt_path`` tests: test those, without the callback.
        callbacks = self.trainer.callbacks
        if ckpt:
            self.trainer.callbacks = [cb for cb in callbacks if not isinstance(cb, WeightAveraging)]
        try:
            with warnings.catch_warnings():  # "... callbacks used to create the checkpoint": on purpose
                warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`")
                self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)
        finally:
            self.trainer.callbacks = callbacks


def main(args=None, run: bool = True) -> RaccnCLI:
    """Build (and with ``run``, execute) the CLI; ``args`` defaults to ``sys.argv[1:]``."""
    tune_cpu_allocator()
    skip_futile_nvml_probe()
    try:
        return RaccnCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
        )
    except SIGTERMException:  # Lightning's (a SystemExit with status 0): say it was a signal
        sys.exit(128 + signal.SIGTERM)
