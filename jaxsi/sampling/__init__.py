"""jaxsi.sampling: token-in/token-out sampling with a functional KV cache.

``sample`` / ``continue_sampling`` take token id lists and return
``jaxsi.trajectory.Trajectory`` objects; ``generate`` / ``continue_generate``
are their jitted array-level cores. Strategies are frozen dataclasses.
"""

from jaxsi.sampling import multiturn
from jaxsi.sampling.buckets import DEFAULT_INJECT_BUCKETS
from jaxsi.sampling.buckets import DEFAULT_PROMPT_BUCKETS
from jaxsi.sampling.buckets import POW2_BATCH_BUCKETS
from jaxsi.sampling.buckets import bucket_size
from jaxsi.sampling.buckets import left_pad
from jaxsi.sampling.sampler import DecodeState
from jaxsi.sampling.sampler import continue_generate
from jaxsi.sampling.sampler import continue_sampling
from jaxsi.sampling.sampler import generate
from jaxsi.sampling.sampler import sample
from jaxsi.sampling.sampler import trace_counts
from jaxsi.sampling.strategies import Greedy
from jaxsi.sampling.strategies import MinP
from jaxsi.sampling.strategies import Sampling
from jaxsi.sampling.strategies import Strategy
from jaxsi.sampling.strategies import Temperature
from jaxsi.sampling.strategies import TopK
from jaxsi.sampling.strategies import TopP
from jaxsi.sampling.strategies import min_p_mask
from jaxsi.sampling.strategies import top_k_mask
from jaxsi.sampling.strategies import top_p_mask

__all__ = [
    "DEFAULT_INJECT_BUCKETS", "DEFAULT_PROMPT_BUCKETS", "POW2_BATCH_BUCKETS",
    "DecodeState", "Greedy", "MinP", "Sampling", "Strategy", "Temperature",
    "TopK", "TopP", "bucket_size", "continue_generate", "continue_sampling",
    "generate", "left_pad", "multiturn", "min_p_mask", "sample", "top_k_mask", "top_p_mask",
    "trace_counts",
]
