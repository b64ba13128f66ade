"""Ratio benchmarks: each fast path of ``course`` against the naive way, in the same run.

Run ``python -m benchmarks`` (or ``make bench``); ``--quick`` shrinks every size so that the
whole run takes well under a minute. Each item prints one line (ours, the baseline, their
ratio, the goal, met or missed) and the table is written to ``build/benchmarks.json``.

Timings on a shared machine are noisy, so every timed pair is measured interleaved (ours,
baseline, ours, baseline, ...) and compared within the run; nothing here is a test.
"""
