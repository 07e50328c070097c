"""weightspace: the shared low-rank weight subspace of a collection of models.

Library modules, one concept each (none imports Snakemake):

- ``io``          atomic writes of files, tables and directories
- ``store``       per-model Zarr stores (source dtype kept, bf16 as uint16 bits)
- ``layers``      reading model folders (safetensors only), LoRA pairing, matrix views
- ``collection``  the collection table (the lock): keys, revisions, splits
- ``zoo``         the built-in offline model zoo (digits MLPs and LoRA adapters)
- ``hosvd``       the decomposition: streaming Grams, eigendecomposition, spectra, nulls
- ``project``     coefficients, reconstructions and the baselines
- ``evaluate``    reconstruction error, task accuracy and memory accounting
- ``adapt``       new tasks learned by coefficients only, beside PEFT's tuners and controls
- ``merge``       models merged by PEFT's merge utilities and in the subspace, own heads
- ``core``        pure numerics: coefficient parametrization, merging (no I/O)
- ``figures``     seaborn figures
"""

__version__ = "0.1.0"
