"""The pieces of ``python -m bench.caption_bench``, one job each.

``plan`` (how much to measure), ``images`` (the request images), ``stats`` (per-level results and ratios),
``limit`` (the model called in process: the machine's limit), ``targets`` (the served captioners the load
generator drives), ``load`` (closed loops and the side-by-side schedule), ``report`` (the JSON's sections and
the comparison against the targets). ``bench/caption_bench.py`` wires them together.
"""
