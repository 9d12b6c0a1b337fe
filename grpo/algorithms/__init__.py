"""Pure tensor functions of the RL algorithms, each family behind a small name -> function registry.

Nothing here knows about DeepSpeed, ranks or engines: inputs are tensors and plain numbers, and
each function returns its value (plus metrics where useful). The trainer picks functions by the
names in the recipe (`algo.advantage`, `algo.policy_loss`, `algo.kl_estimator`, `algo.loss_agg`);
PPO's critic side (GAE, the clipped value loss) is in gae.py.
"""
from grpo.algorithms.advantages import ADVANTAGES, whiten
from grpo.algorithms.gae import adaptive_lambda, clipped_value_loss, gae, token_rewards
from grpo.algorithms.losses import KL_ESTIMATORS, LOSS_AGGREGATIONS, POLICY_LOSSES, StepNorm
from grpo.algorithms.logprobs import gathered_logprobs_and_entropy, token_logprobs_and_entropy
from grpo.algorithms.shaping import (groups_with_signal, kl_penalised_rewards, overlong_penalty,
                                     truncated_importance_weights)

__all__ = ["adaptive_lambda", "clipped_value_loss", "gae", "token_rewards", "ADVANTAGES", "POLICY_LOSSES", "KL_ESTIMATORS", "LOSS_AGGREGATIONS", "StepNorm", "whiten",
           "token_logprobs_and_entropy", "gathered_logprobs_and_entropy", "groups_with_signal", "kl_penalised_rewards",
           "overlong_penalty", "truncated_importance_weights"]
