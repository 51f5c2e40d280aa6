"""Re-ID retrieval evaluation: distances, mAP / CMC / mINP (:mod:`.metrics`), k-reciprocal re-ranking
(:mod:`.rerank`), bootstrap intervals and summaries (:mod:`.bootstrap`), equivalence verdicts over seeds
(:mod:`.equivalence`).

Arrays in, numbers out: this package knows nothing about models (:mod:`deap_lib.inference` extracts features
with one).
"""
from .bootstrap import bootstrap_interval, paired_bootstrap, summarize
from .equivalence import tost, verdict, verdict_of_tost
from .metrics import METRICS, compute_distance, evaluate
from .rerank import re_ranking

__all__ = ["compute_distance", "evaluate", "re_ranking", "bootstrap_interval", "paired_bootstrap", "summarize",
           "METRICS", "tost", "verdict", "verdict_of_tost"]
