"""Measure what an encoder learned: probes on frozen features, and representation health.

Pure functions on feature tensors (the engine calls them at the end of a run, and its telemetry
calls :mod:`multissl.probes.health` every few steps), plus :func:`extract_features`, the one place
a frozen encoder runs over a dataset through the Domain contract, and :func:`run_probes`, which
runs named probes end to end. Nothing here imports a concrete domain.
"""

from multissl.probes.classification import (
    LayerWeighting,
    LinearProbeResult,
    class_balanced_subset,
    fine_tune,
    linear_probe,
)
from multissl.probes.extract import ExtractedFeatures, embed_texts, extract_features, extract_from_dataset
from multissl.probes.frames import combine_layers, frame_probe, stack_layers
from multissl.probes.health import (
    alignment,
    effective_rank,
    embedding_std,
    nearest_neighbours,
    representation_health,
    save_embedding_map,
    uniformity,
)
from multissl.probes.knn import knn_classify, knn_predict
from multissl.probes.report import ProbeResult, load_results, results_table, save_results
from multissl.probes.retrieval import retrieval_recall, zero_shot_classifier, zero_shot_classify
from multissl.probes.suite import ProbeOptions, run_probes
from multissl.probes.text import (
    evaluate_senteval_task,
    evaluate_sts,
    read_semeval_sts,
    read_senteval_task,
    read_sick,
    read_stsb,
    spearman_correlation,
    sts_spearman,
)

__all__ = [
    "linear_probe", "LinearProbeResult", "LayerWeighting", "class_balanced_subset", "fine_tune",
    "knn_classify", "knn_predict",
    "effective_rank", "alignment", "uniformity", "embedding_std", "nearest_neighbours",
    "representation_health", "save_embedding_map",
    "extract_features", "extract_from_dataset", "ExtractedFeatures", "embed_texts",
    "frame_probe", "combine_layers", "stack_layers",
    "retrieval_recall", "zero_shot_classifier", "zero_shot_classify",
    "read_stsb", "read_semeval_sts", "read_sick", "spearman_correlation", "sts_spearman", "evaluate_sts",
    "read_senteval_task", "evaluate_senteval_task",
    "ProbeResult", "results_table", "save_results", "load_results",
    "run_probes", "ProbeOptions",
]

