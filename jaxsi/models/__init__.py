"""jaxsi.models: Flax NNX decoders (Llama/Qwen/Gemma family) behind a functional API.

``model, params = init(get_config('tiny'), jax.random.key(0))``;
``logits, cache = model.apply(params, tokens, positions, ...)``.
"""

from jaxsi.models.config import ModelConfig
from jaxsi.models.config import PRESETS
from jaxsi.models.config import describe
from jaxsi.models.config import get_config
from jaxsi.models.config import num_params
from jaxsi.models.hf import config_from_hf
from jaxsi.models.hf import load_pretrained
from jaxsi.models.hf import params_from_hf
from jaxsi.models.hf import params_to_hf
from jaxsi.models.kv_cache import KVCache
from jaxsi.models.kv_cache import cache_logical_axes
from jaxsi.models.kv_cache import init_cache
from jaxsi.models.logprobs import logprobs_from_hidden
from jaxsi.models.logprobs import logprobs_from_logits
from jaxsi.models.logprobs import prediction_mask
from jaxsi.models.logprobs import score_fn
from jaxsi.models.logprobs import token_logprobs
from jaxsi.models.model import Model
from jaxsi.models.model import build
from jaxsi.models.model import count_params
from jaxsi.models.model import init
from jaxsi.models import loading
from jaxsi.models import lora
from jaxsi.models.hf import hf_config_from_config
from jaxsi.models.hf import save_pretrained
from jaxsi.models.lora import LoraConfig
