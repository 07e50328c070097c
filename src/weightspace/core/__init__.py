"""Pure numerics: tensors in, tensors out; no file, table or workflow I/O.

- ``align``         representation alignment metrics (mutual k-NN, CKA, CKNNA, SVCCA, …),
                    pairwise and for all pairs at once
- ``hosvd``         the decomposition: float64 mode sums, eigendecomposition, sketches, nulls
- ``lowrank``       a matrix held as its LoRA factors, scale·B·A
- ``coefficients``  a weight change held in a shared basis, ΔW = U_row C U_colᵀ (adaptation
                    and its export as a LoRA)
- ``merging``       merging task vectors: PEFT's merge utilities, and merging in the basis
- ``sharing``       the sharing test: rotation-null draws from singular values, statistics,
                    empirical p-values, Benjamini–Hochberg
"""
