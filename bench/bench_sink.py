"""The parquet sink of `cfx subset` (issue 21, item 4): pyarrow's OSFile vs cfx's KeptErrorFile.

With content-defined chunking pyarrow aborts the process (C++ `Check failed`) when a write fails, so `cfx subset`
then writes through ``pyarrow.PythonFile(KeptErrorFile(path))``, which keeps the error for Python instead. This
measures what that costs: the same row groups of incompressible ~400 KB images written through either sink, CDC on
and off, interleaved, medians of --reps runs.

    python bench/bench_sink.py [--reps 5] [--rows 400]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from cfx.outputs import KeptErrorFile  # noqa: E402


def write(table: pa.Table, path: Path, sink_kind: str, cdc: bool) -> float:
    """Seconds to write ``table`` in row groups of 100 rows through ``sink_kind`` (os.fsync counted)."""
    start = time.perf_counter()
    file = KeptErrorFile(path) if sink_kind == "kept" else None
    sink = pa.PythonFile(file, mode="w") if file is not None else pa.OSFile(str(path), "wb")
    options = dict(compression="none", use_dictionary=False, write_statistics=False)
    writer = pq.ParquetWriter(sink, table.schema, use_content_defined_chunking=cdc, **options)
    for i in range(0, table.num_rows, 100):
        writer.write_table(table.slice(i, 100))
    writer.close()
    sink.close()
    if file is not None:
        file.close()
        file.check()
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    seconds = time.perf_counter() - start
    path.unlink()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rows", type=int, default=400)
    args = ap.parse_args()
    table = pa.table({"image_data": [os.urandom(400_000) for _ in range(args.rows)]})
    mb = table.nbytes / 1e6
    print(f"{args.rows} rows, {mb:.0f} MB, {args.reps} interleaved runs each\n")
    print("| CDC | pyarrow OSFile | cfx KeptErrorFile | ratio (cfx / pyarrow) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="cfx-bench-sink-") as folder:
        for cdc in (True, False):
            times: dict[str, list[float]] = {"osfile": [], "kept": []}
            for _ in range(args.reps):
                for kind in times:
                    times[kind].append(write(table, Path(folder) / f"{kind}.parquet", kind, cdc))
            os_s, kept_s = statistics.median(times["osfile"]), statistics.median(times["kept"])
            print(
                f"| {'on' if cdc else 'off'} | {os_s:.3f} s ({mb / os_s:.0f} MB/s) "
                f"| {kept_s:.3f} s ({mb / kept_s:.0f} MB/s) | {kept_s / os_s:.2f} |"
            )


if __name__ == "__main__":
    main()
