"""jaxsi.training: train state, optimizer, mesh/rules, jitted steps, checkpoints, FLOPs.

The public API is re-exported here; the modules are one concept each:
``train_state``, ``optimizer``, ``steps``, ``checkpoint``, ``flops`` (plus
``metrics``, ``evaluation``, the sampling ``evaluate`` and the supervised
``fit``). The mesh and rules table live in the leaf module
:mod:`jaxsi.partitioning` (re-exported here).
"""

from jaxsi.partitioning import (
    DEFAULT_RULES, data_sharding, logical_to_spec, make_mesh,
    opt_state_shardings, param_shardings, shard_trajectory, state_shardings,
    with_shardings)
from jaxsi.training.checkpoint import Checkpointer, PreemptionGuard
from jaxsi.training.flops import (
    measure_matmul_peak, mfu, train_step_flops, xla_flops)
from jaxsi.training.optimizer import (
    find_learning_rate, learning_rate, make_optimizer, make_schedule)
from jaxsi.training.steps import (
    make_eval_logprobs_step, make_loss_and_grad, make_update_step, model_outputs_fn,
    sft_objective)
from jaxsi.training.train_state import (
    TrainState, create_train_state, init_train_state)
