"""Figures and the Markdown table of `keras-seg benchmark peers` from its raw samples.

Per row, precision, case, library and path: the median images/s over the rounds, min, max and
spread ((max - min) / median); the ratio keras_seg (user path) / best peer and the inner-path
ratio; per phase the workers' peak RSS and keras_seg / SMP.
"""

from __future__ import annotations

import statistics
from typing import Any

# The path whose figure stands for a peer: SMP's only one; keras-hub's the user path.
PEER_PATH = {"smp": "eager"}


def stats(values: list[float]) -> dict[str, Any]:
    """Median, min, max and spread ((max - min) / median) of images/s samples."""
    median = statistics.median(values)
    return {
        "median": median,
        "min": min(values),
        "max": max(values),
        "spread": (max(values) - min(values)) / median,
        "images_per_s": values,
    }


def summarise(groups: list[dict], user_path: dict, inner_path: dict) -> dict[str, Any]:
    """{"cases": per row/precision/case figures, "memory": per phase RSS, "groups": raw}."""
    cases, memory = [], []
    for group in groups:
        phase = group["phase"]
        names = list(dict.fromkeys(s["case"] for s in group["samples"]))
        for case in names:
            impls: dict[str, dict[str, Any]] = {}
            for sample in group["samples"]:
                if sample["case"] == case:
                    paths = impls.setdefault(sample["library"], {})
                    paths.setdefault(sample["path"], []).append(sample["images_per_s"])
            impls = {lib: {p: stats(v) for p, v in paths.items()} for lib, paths in impls.items()}
            peers = {
                lib: paths[PEER_PATH.get(lib, user_path[phase])]["median"]
                for lib, paths in impls.items()
                if lib != "keras_seg"
            }
            best = max(peers, key=peers.get)
            ours = impls["keras_seg"]
            cases.append(
                {
                    "row": group["row"],
                    "title": group["title"],
                    "precision": group["precision"],
                    "case": case,
                    "phase": phase,
                    "impls": impls,
                    "user_path": user_path[phase],
                    "inner_path": inner_path[phase],
                    "best_peer": best,
                    "ratio": ours[user_path[phase]]["median"] / peers[best],
                    "ratio_inner": ours[inner_path[phase]]["median"] / peers[best],
                    "ratio_by_peer": {
                        lib: ours[user_path[phase]]["median"] / value
                        for lib, value in peers.items()
                    },
                }
            )
        rss = {lib: w["peak_rss_mib"] for lib, w in group["workers"].items()}
        user = {lib: w["rss_user_path_warm"] for lib, w in group["workers"].items()}
        memory.append(
            {
                "row": group["row"],
                "precision": group["precision"],
                "phase": phase,
                "peak_rss_mib": rss,
                "ratio": rss["keras_seg"] / rss["smp"],
                "user_path_rss_mib": user,
                "user_path_ratio": user["keras_seg"] / user["smp"],
            }
        )
    return {"cases": cases, "memory": memory, "groups": groups}


def markdown(payload: dict[str, Any]) -> str:
    """One table: rows x precisions x cases, with a header line (date, machine, command)."""
    s, m, v = payload["settings"], payload["machine"], payload["versions"]
    results = payload["results"]
    memory = {(r["row"], r["precision"], r["phase"]): r for r in results["memory"]}
    onednn: dict[str, set] = {}  # per phase: training runs as `keras-seg train` does
    for g in results["groups"]:
        worker = g["workers"]["keras_seg"]
        kind = "frozen" if worker.get("tf_onednn_frozen_weights") else worker.get("tf_onednn")
        onednn.setdefault(g["phase"], set()).add(kind)
    kernels = {
        True: "oneDNN",
        False: "Eigen (oneDNN off)",
        "frozen": "oneDNN, filters reordered once (TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1)",
    }
    tf_kernels = ", ".join(
        f"{phase} " + "/".join(kernels.get(o, "unrecorded") for o in sorted(seen, key=str))
        for phase, seen in onednn.items()
    )
    lines = [
        f"{payload['date']}, {m.get('cpu_model')} ({m.get('cpu_count')} cores); TensorFlow "
        f"{v.get('tensorflow')}, Keras {v.get('keras')}, torch {v.get('torch')}, SMP "
        f"{v.get('segmentation-models-pytorch')}, timm {v.get('timm')}; {s['threads']} PyTorch "
        f"threads, TF intra-op threads {s['tf_threads'] or 'default (all cores)'}, TF CPU "
        f"kernels {tf_kernels}; "
        f"{s['num_classes']} classes, random weights; median of {s['rounds']} interleaved "
        f"rounds of {s['iters']} calls; `{s['command']}`",
        "",
    ]
    header = [
        "architecture",
        "precision",
        "case",
        "keras_seg img/s (predict_on_batch / train_on_batch)",
        "keras_seg predict / fit img/s",
        "keras_seg inner img/s",
        "peer img/s",
        "keras_seg / peer",
        "inner / peer",
        "spread keras_seg / peer",
        "peak RSS MiB keras_seg / peer (ratio)",
        "user path peak RSS MiB keras_seg / peer (ratio)",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in results["cases"]:
        ours, peer = c["impls"]["keras_seg"], c["impls"][c["best_peer"]]
        peer_path = PEER_PATH.get(c["best_peer"], c["user_path"])
        other = "predict" if c["phase"] == "inference" else "fit"
        rss = memory[(c["row"], c["precision"], c["phase"])]
        size = s["size"] if c["phase"] == "inference" else s["train_size"]
        peer_name = "" if c["best_peer"] == "smp" else f" ({c['best_peer']})"
        cells = [
            c["title"],
            c["precision"],
            f"{c['case']} @{size}",
            f"{ours[c['user_path']]['median']:.3g}",
            f"{ours[other]['median']:.3g}",
            f"{ours[c['inner_path']]['median']:.3g}",
            f"{peer[peer_path]['median']:.3g}{peer_name}",
            f"{c['ratio']:.2f}",
            f"{c['ratio_inner']:.2f}",
            f"{ours[c['user_path']]['spread']:.0%} / {peer[peer_path]['spread']:.0%}",
            f"{rss['peak_rss_mib']['keras_seg']:.0f} / "
            f"{rss['peak_rss_mib'][c['best_peer']]:.0f} ({rss['ratio']:.2f})",
            f"{rss['user_path_rss_mib']['keras_seg']:.0f} / "
            f"{rss['user_path_rss_mib'][c['best_peer']]:.0f} ({rss['user_path_ratio']:.2f})",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Ratios are of median images/s; the peer is the fastest one (SMP unless named); "
        "spread = (max - min) / median over the rounds; RSS is each phase's worker's peak "
        "(inference and training in separate processes), ratio keras_seg / SMP; user path "
        f"RSS is the worker's peak after {max(s['warmup'], s.get('rss_calls', 0))} calls of "
        "the user path per case, before any other path.",
    ]
    return "\n".join(lines) + "\n"
