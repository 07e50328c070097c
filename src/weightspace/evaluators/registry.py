"""The evaluators by name (``evaluator:`` in a collection's config)."""

from __future__ import annotations

TRANSFORMERS = {"text-classification": "TextClassificationEvaluator",
                "image-classification": "ImageClassificationEvaluator",
                "causal-lm": "CausalLMEvaluator"}
EVALUATORS = ("zoo", "none", *TRANSFORMERS)


def make_evaluator(name: str, **kwargs):
    """The collection's evaluator; kwargs: data_seed, base_folder, evaluation (its config).
    The transformers evaluators import transformers, so only when asked for."""
    if name not in EVALUATORS:
        raise ValueError(f"unknown evaluator {name!r}; available: {sorted(EVALUATORS)}")
    if name in ("zoo", "none"):
        from .zoo import NoEvaluator, ZooEvaluator

        return (ZooEvaluator if name == "zoo" else NoEvaluator)(**kwargs)
    from . import hf

    return getattr(hf, TRANSFORMERS[name])(**kwargs)
