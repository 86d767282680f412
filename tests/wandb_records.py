"""The records of a W&B run's transaction log (``run-<id>.wandb``), for tests of offline runs.

An offline run of wandb >= 0.19 keeps what it logged (the run, its config, history rows, summary,
and the exit record that ``finish`` writes) in this log alone; ``wandb sync`` uploads it. wandb
ships no reader of it any more, so this one follows its format: a 7-byte header (``":W&B"``,
magic ``0xBEE1``, version), then LevelDB-style log blocks of 32 KiB, each record a 7-byte header
(CRC-32C, length, type: full, first, middle, last) and its bytes, every record a serialised
``wandb_internal_pb2.Record``. CRCs are not checked.
"""

from __future__ import annotations

import struct

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str) -> list[wandb_internal_pb2.Record]:
    """The records of the log at ``path``, in order; ``ValueError`` if it is not such a log."""
    with open(path, "rb") as f:
        data = f.read()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path}: not a W&B transaction log (header {data[:7]!r})")
    records, parts, pos = [], b"", 7
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zeros: the end of what was written
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        parts = chunk if kind in (FULL, FIRST) else parts + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            records.append(record)
    return records
