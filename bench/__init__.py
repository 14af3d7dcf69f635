"""The benchmark and training-evidence tools of rspose-kernels (docs/DESIGN.md §8, §11).

Run from the repository root as modules, e.g. ``python3 -m bench.run``,
``python3 -m bench.report``, ``python3 -m bench.calibrate``, ``python3 -m bench.train``.

Layout:

- ``bench.harness``: what any benchmark here needs — timing (``timing``), peak memory
  (``memory``), provenance of a run (``provenance``), result rows, the CSV files and the one
  millisecond formatter (``results``), and the progress bar (``progress``).
- ``bench.cases``, ``bench.providers``: the microbenchmark's inputs and what it times;
  ``bench.run`` is its command line, ``bench.calibrate`` fits the cost model to its rows,
  ``bench.report`` and ``bench.plot`` read them back.
- ``bench.work_model``, ``bench.cuda_sweep``, ``bench.rs_loop_baseline``: GPU work counts, the
  CUDA threshold sweep, the per-positive loop baseline.
- ``bench.train`` and ``bench.train_*``: the training evidence.
"""
