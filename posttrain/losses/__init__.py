"""Pure loss functions. Each takes log-probs (and masks) and returns (loss, metrics)."""
from posttrain.losses.preference import (
                                         PREFERENCE_LOSSES,
                                         LossSpec,
                                         PairLogps,
                                         cdpo,
                                         dpo,
                                         hinge,
                                         hinge_norm,
                                         ipo,
                                         ipo_length_norm,
                                         rdpo,
                                         rdpo_zeta,
                                         rpo,
                                         rpo_token_mean,
)
from posttrain.losses.sft import sft_loss

__all__ = ["sft_loss", "PREFERENCE_LOSSES", "LossSpec", "PairLogps", "dpo", "cdpo", "rdpo",
           "rdpo_zeta", "ipo", "ipo_length_norm", "hinge", "hinge_norm", "rpo", "rpo_token_mean"]
