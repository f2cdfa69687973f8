"""The TAPTRv2 network of the paper (Li et al., NeurIPS 2024), as the official code specifies it.

Read top to bottom: `common.py` (building blocks), `backbone.py`, `position_encoding.py`,
`levels.py` (multi-scale canvas), `ops.py` (the replaceable operations as plain math:
deformable attentions, softmax, FFN, mask), `attention.py`, `deformable_attention.py`,
`encoder.py`, `decoder.py` (decoder layers and the Attention-based Position Update),
`model.py` (`TAPTRv2`), `windows.py` (the sliding-window stream), `hooks.py` (how additions
attach). This package imports nothing from `taptr.models.additions` or `taptr.models.kernels`.
"""
