"""Which explanation to trust: faithfulness, robustness, sanity and complexity metrics.

``evaluate(results, metrics=[...])`` scores results of any method on any model
(converted, a torch module, or one known by its predictions) and returns one long
data frame; the metric objects below carry the settings of each metric.
``rank(scores)`` orders methods by their mean per-metric rank, and
``recommend(conv, data)`` runs candidate methods, scores and ranks them.
"""

from innsight.metrics.baselines import gaussian_blur
from innsight.metrics.base import Curve, Metric, Scores
from innsight.metrics.catalogue import DEFAULT_METRICS, METRICS
from innsight.metrics.complexity import Completeness, Complexity, Sparseness
from innsight.metrics.evaluate import evaluate
from innsight.metrics.faithfulness import Deletion, FaithfulnessCorrelation, Infidelity, Insertion
from innsight.metrics.plots import curve_means, plot_curves, plot_table, table
from innsight.metrics.randomisation import RandomLogit, Randomization
from innsight.metrics.ranking import rank
from innsight.metrics.recommender import DEFAULT_METHODS, RECOMMEND_METRICS, recommend
from innsight.metrics.road import ROAD
from innsight.metrics.robustness import Sensitivity

__all__ = [
    "Completeness", "Complexity", "Curve", "DEFAULT_METHODS", "DEFAULT_METRICS", "Deletion",
    "FaithfulnessCorrelation", "Infidelity", "Insertion", "METRICS", "Metric", "ROAD", "RandomLogit",
    "RECOMMEND_METRICS", "Randomization", "Scores", "Sensitivity", "Sparseness", "curve_means",
    "evaluate", "gaussian_blur", "plot_curves", "plot_table", "rank", "recommend", "table",
]
