"""AlgoPerf: a v0.6 JAX submission for any registered optimizer, and AlgoPerf-lite.

* :mod:`~celo.evaluation.algoperf.submission` — the five submission functions.
* :mod:`~celo.evaluation.algoperf.spec` — the slice of ``algoperf.spec`` they use.
* :mod:`~celo.evaluation.algoperf.workloads` — CPU-sized workloads on offline data.
* :mod:`~celo.evaluation.algoperf.harness` — the timed runner and performance-profile scoring.
* :mod:`~celo.evaluation.algoperf.lite` — a pool on all workloads, target calibration, export.
"""
