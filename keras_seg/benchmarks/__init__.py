"""Benchmarks that write JSON (machine, versions, settings, medians).

`keras-seg benchmark <kind> [options]` runs `keras_seg.benchmarks.<kind>.main(argv)`;
each kind module parses its own options.
"""

KINDS = ("data", "models", "export", "bridge", "tflite_compare", "profile")
