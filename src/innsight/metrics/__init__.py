"""Which explanation to trust: faithfulness, robustness, sanity and complexity metrics.

``evaluate(results, metrics=[...])`` scores results of any method on any model
(converted, a torch module, or one known by its predictions) and returns one long
data frame; the metric objects below carry the settings of each metric.
"""

from innsight.metrics.baselines import gaussian_blur
from innsight.metrics.base import Curve, Metric, Scores
from innsight.metrics.catalogue import DEFAULT_METRICS, METRICS
from innsight.metrics.complexity import Completeness, Complexity, Sparseness
from innsight.metrics.evaluate import evaluate
from innsight.metrics.faithfulness import Deletion, FaithfulnessCorrelation, Infidelity, Insertion
from innsight.metrics.plots import curve_means, plot_curves, plot_table, table
from innsight.metrics.randomisation import RandomLogit, Randomization
from innsight.metrics.robustness import Sensitivity

__all__ = [
    "Completeness", "Complexity", "Curve", "DEFAULT_METRICS", "Deletion",
    "FaithfulnessCorrelation", "Infidelity", "Insertion", "METRICS", "Metric", "RandomLogit",
    "Randomization", "Scores", "Sensitivity", "Sparseness", "curve_means", "evaluate",
    "gaussian_blur", "plot_curves", "plot_table", "table",
]
