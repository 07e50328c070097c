"""Task evaluators behind one interface, chosen per collection with ``evaluator:``.

An evaluator is made with ``make_evaluator(name, data_seed=, base_folder=, evaluation=)`` and
offers:

- ``metric``: the name of its score (``accuracy``, ``rougeL``, or None for ``none``);
- ``base_weights()``: the frozen base's tensors (adapters are scored on top of it), or None;
- ``score(config, weights, split="test")``: the model given by its config and weights, scored
  on its own task (``split="validation"``: the tuning data of adapt and merge, where
  ``has_validation``);
- ``features(config, weights, n, pooling)``: per-layer representations of ``n`` probe inputs
  (the align stage); ``probe_id(n)``: a digest of those inputs (two collections are aligned
  with each other only on the same probe items).

Modules: ``registry`` (``make_evaluator``), ``zoo`` (the built-in zoo's digits tasks; ``none``) and ``hf`` (transformers models:
text-classification, image-classification, causal-lm; imported only when asked for).
"""
