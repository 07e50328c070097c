"""Pure numerics: tensors in, tensors out; no file, table or workflow I/O.

- ``coefficients``  a weight change held in a shared basis, ΔW = U_row C U_colᵀ (adaptation
                    and its export as a LoRA)
- ``merging``       merging task vectors: PEFT's merge utilities, and merging in the basis
"""
