"""Benchmarks that write JSON (machine, versions, settings, medians).

`keras-seg benchmark <kind> [options]` runs `keras_seg.benchmarks.<module>.main(argv)`, the
module being the kind's name unless `MODULES` names another; each parses its own options.
"""

KINDS = (
    "data",
    "models",
    "export",
    "bridge",
    "tflite_compare",
    "peers",
    "precision",
    "pipeline",
    "isbi",
    "profile",
    "memory",
)
#: kind -> module, where they differ (`isbi` is the learning-speed comparison with SMP).
MODULES = {"isbi": "learning"}
