"""weightspace: the shared low-rank weight subspace of a collection of models.

Modules, by layer (docs/ARCHITECTURE.md; tests/test_architecture.py checks that imports only
point down and never form a circle; none imports Snakemake):

Pure numerics (``core``: tensors in, tensors out)
- ``core.sharing``       the sharing test: rotation-null draws, the statistic, the power ceiling
- ``core.stats``         what the tables report: explained variance, CIs, empirical p, BH, calls
- ``core.coefficients``  a change held in a shared basis, ΔW = U_row C U_colᵀ
- ``core.merging``       merging task vectors (PEFT's merge utilities, and in the basis)
- ``core.align``         the representation alignment metrics, pairwise and all pairs at once
- ``core.hosvd``         the decomposition: mode sums, eigendecomposition, sketches, nulls
- ``core.lowrank``       a matrix held as its LoRA factors, scale·B·A
- ``core.bank``          the model bank's linear map: many models' rows in one batched forward
- ``core.transfer``      one collection's subspace against another's models: energy, Haar null
- ``core.search``        a validation grid that widens until its optimum is inside

Files, tables and sources
- ``io``          atomic writes of files, tables and directories
- ``store``       per-model Zarr stores (source dtype kept, bf16 as uint16 bits)
- ``stream``      reading ahead on a thread, moves to the device, the row-block model Gram
- ``layers``      safetensors headers and checks, LoRA pairing, matrix views of a model
- ``collection``  the collection table (the lock): keys, revisions, splits, screening
- ``sources``     zoo, local folder, Hub behind one interface: resolve, fetch inputs, base
- ``hub``         Hugging Face Hub collections: resolving, fetching, manifests, errors
- ``zoo``         the built-in offline zoo (digits MLPs, LoRA adapters, fine-tunes)
- ``zoospec``     what a zoo collection holds: keys, tasks, families (read at parse time: no torch)
- ``textzoo``     the realism zoo: PEFT LoRAs on the real MiniLM, real text tasks

Stages (one per rule file) and their helpers
- ``extract``, ``subspace``, ``spectra`` (its tables, read without torch), ``project``,
  ``evaluate``, ``export``, ``bank``, ``sweep``, ``adapt``, ``merge``, ``transfer``, ``representations``
  (the align stage), ``figures``
- ``evaluators``  task evaluators behind one interface: the zoo's (digits) and transformers
  models' (text and image classification, causal LM)

Around them
- ``api``         the library from Python without the workflow (docs/api.md)
- ``runtime``     what every workflow script needs: the job (or its stand-in), logs, threads
- ``codehash``    rule code versions from the modules a script imports
- ``configcheck`` the config against its schema, one line per mistake
"""

__version__ = "0.1.0"
