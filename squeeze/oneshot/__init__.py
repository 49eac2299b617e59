"""One-shot compression from a trained model and a small calibration set: RTN, GPTQ and AWQ weight-only
quantization; magnitude, Wanda and SparseGPT pruning (unstructured X or N:M); and their composition.

``grid`` holds the quantization grid every method shares (GPTQ's quantizer), ``solvers`` the per-layer algorithms
(pure tensor functions, each pinned by tests against its paper's reference code), ``calibrate`` the block-by-block
walk over a model's transformer layers that feeds them, as the reference implementations do.
"""
