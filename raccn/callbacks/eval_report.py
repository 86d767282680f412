"""The test report: the papers' accuracy tables from the logged test metrics, as CSV, JSON and text.

Rows are found by metric name, so one callback serves every model family:

- RA-CNN (Fu et al. 2017, Tables 1-3): ``test/acc_scale{s}`` -> "scale s", then the softmax
  averages ``test/acc_scale1+2[+3...]`` -> "scale 1+2", ..., then ``test/acc_fused`` -> "fused";
- RAM (Mnih et al. 2014): ``test/acc_glimpse{t}`` -> "t glimpse(s)", the accuracy after t glimpses;
- DRAM (Ba et al. 2015): ``test/seq_acc`` -> "whole sequence", ``test/seq_acc_len{n}`` -> "n
  digit(s)" (whole-sequence accuracy among the numbers of n digits), ``test/digit_acc`` ->
  "digits", ``test/len_acc`` -> "length"; the printed table adds the whole-sequence error
  (the paper's unit) under it;
- AG-CNN (Guan et al. 2018): ``test/acc_global``, ``test/acc_local``, ``test/acc_fusion`` ->
  "global branch", "local branch", "fusion branch";
- any other module: every ``test/acc*`` metric, by name.

Values are the logged fractions in [0, 1] (``accuracy``) and the same in percent
(``accuracy_percent``, the papers' unit).
"""

from __future__ import annotations

import csv
import json
import os
import re
from typing import Any, NamedTuple

import pytorch_lightning as pl
from lightning_fabric.utilities.rank_zero import rank_zero_info, rank_zero_warn

from raccn.callbacks.run_dir import run_dir
from raccn.write_errors import explain_write_errors

__all__ = ["EvalReportWriter", "ReportRow", "report_rows"]

COLUMNS = ["row", "metric", "accuracy", "accuracy_percent"]


class ReportRow(NamedTuple):
    """One line of the report: ``label`` (e.g. "scale 1+2"), the logged ``metric`` name and its
    ``value`` (fraction in [0, 1])."""

    label: str
    metric: str
    value: float


def _glimpses(t: int) -> str:
    return f"{t} glimpse" + ("" if t == 1 else "s")


# (pattern of the name after the prefix, label, sort key); the first matching pattern wins.
_FAMILIES = (
    (re.compile(r"acc_scale(\d+)"), lambda m: f"scale {m[1]}", lambda m: (0, int(m[1]))),
    (re.compile(r"acc_scale(\d+(?:\+\d+)+)"), lambda m: f"scale {m[1]}", lambda m: (1, m[1].count("+"))),
    (re.compile(r"acc_fused"), lambda m: "fused", lambda m: (2, 0)),
    (re.compile(r"acc_glimpse(\d+)"), lambda m: _glimpses(int(m[1])), lambda m: (3, int(m[1]))),
    (re.compile(r"seq_acc"), lambda m: "whole sequence", lambda m: (4, 0)),
    (re.compile(r"seq_acc_len(\d+)"), lambda m: f"{m[1]} digit" + ("" if m[1] == "1" else "s"),
     lambda m: (5, int(m[1]))),
    (re.compile(r"digit_acc"), lambda m: "digits", lambda m: (6, 0)),
    (re.compile(r"len_acc"), lambda m: "length", lambda m: (7, 0)),
    (re.compile(r"acc_(global|local|fusion)"), lambda m: f"{m[1]} branch",
     lambda m: (8, ("global", "local", "fusion").index(m[1]))),
)
SEQUENCE_ROW = "whole sequence"


def report_rows(metrics: dict[str, float], prefix: str = "test/") -> list[ReportRow]:
    """The report's rows, in the papers' order, from logged metrics (name -> value).

    Known families (see the module docstring) are labelled and ordered; if no metric belongs to
    one, every ``<prefix>acc*`` metric is a row of its own, sorted by name. Metrics without
    ``prefix`` are ignored.
    """
    keyed = []
    for name, value in metrics.items():
        if not name.startswith(prefix):
            continue
        for pattern, label, key in _FAMILIES:
            m = pattern.fullmatch(name[len(prefix):])
            if m:
                keyed.append((key(m), ReportRow(label(m), name, float(value))))
                break
    if keyed:
        return [row for _, row in sorted(keyed, key=lambda kr: kr[0])]
    names = sorted(n for n in metrics if n.startswith(prefix + "acc"))
    return [ReportRow(n[len(prefix):], n, float(metrics[n])) for n in names]


def format_table(rows: list[ReportRow]) -> str:
    """Rows as aligned text: label, then the accuracy in percent; under DRAM's rows, the
    whole-sequence error."""
    width = max(len(r.label) for r in rows)
    lines = [f"  {r.label:<{width}}  {100.0 * r.value:6.2f} %" for r in rows]
    whole = [r for r in rows if r.label == SEQUENCE_ROW]
    if whole:
        lines.append(f"  whole-sequence error: {100.0 * (1.0 - whole[0].value):.2f} %")
    return "\n".join(lines)


class EvalReportWriter(pl.Callback):
    """After ``test``, write ``<run dir>/<filename>.csv`` and ``.json`` and print the table.

    The run dir is the first logger's ``log_dir`` (e.g. ``runs/<name>/version_N``), else
    ``trainer.default_root_dir``. The CSV has the columns ``row, metric, accuracy,
    accuracy_percent``, one line per row of :func:`report_rows`; the JSON holds ``model`` (the
    LightningModule's class), ``checkpoint`` (tested checkpoint or null), ``rows`` (as in the CSV)
    and ``metrics`` (every logged ``test/`` metric, e.g. ``test/error``, ``test/apn_iou_scale2``).
    Files are written in ``on_test_end``; the table is printed at teardown, after Lightning's own
    metrics table. Single-process only (rank zero writes).

    ``raccn.cli`` adds one to every run (options ``--eval_report.*``); list it in
    ``trainer.callbacks`` only for a Trainer built by hand.

    Args:
        filename: base name of the two files (without extension).
        prefix: metrics reported are those whose name starts with this.
    """

    def __init__(self, filename: str = "test_report", prefix: str = "test/") -> None:
        if not filename or os.sep in filename:
            raise ValueError(f"filename must be a plain file name without extension, got {filename!r}")
        self.filename, self.prefix = filename, prefix
        self.written: list[str] = []  #: files written by the last test run
        self._table: str | None = None

    def report(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """The report as a JSON-ready dict (see the class docstring)."""
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(self.prefix)}
        rows = report_rows(metrics, self.prefix)
        return {
            "model": type(pl_module).__name__,
            "checkpoint": trainer.ckpt_path,
            "rows": [dict(zip(COLUMNS, (r.label, r.metric, r.value, round(100.0 * r.value, 4))))
                     for r in rows],
            "metrics": dict(sorted(metrics.items())),
        }

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.written, self._table = [], None
        if not trainer.is_global_zero:
            return
        report = self.report(trainer, pl_module)
        if not report["rows"]:
            rank_zero_warn(f"EvalReportWriter: no '{self.prefix}acc*' metric was logged, so no test "
                           "report was written; log accuracies as test/acc* to get one.")
            return
        folder = run_dir(trainer)
        base = os.path.join(folder, self.filename)
        with explain_write_errors("test report", base + ".csv"):
            os.makedirs(folder, exist_ok=True)
            with open(base + ".csv", "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(report["rows"])
        with explain_write_errors("test report", base + ".json"), open(base + ".json", "w") as fh:
            json.dump(report, fh, indent=2)
        self.written = [base + ".csv", base + ".json"]
        rows = [ReportRow(r["row"], r["metric"], r["accuracy"]) for r in report["rows"]]
        self._table = (f"Test report: top-1 accuracy of {report['model']} "
                       f"(written to {base}.csv and .json)\n{format_table(rows)}")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "test" and self._table is not None:
            rank_zero_info(self._table)
            self._table = None
