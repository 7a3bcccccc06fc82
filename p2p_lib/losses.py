# DRAFT (will be regenerated from lessons/04_losses.ipynb)
import torch
from torch import nn


class GANLoss(nn.Module):
    """Adversarial loss on a grid of logits. 'vanilla' = BCE-with-logits (the paper), 'lsgan' = MSE.
    Call as loss(logits, target_is_real); the target is broadcast to the logits' shape."""

    def __init__(self, mode: str = "vanilla", real_label: float = 1.0, fake_label: float = 0.0):
        super().__init__()
        losses = {"vanilla": nn.BCEWithLogitsLoss, "lsgan": nn.MSELoss}
        if mode not in losses:
            raise ValueError(f"GAN mode must be one of {sorted(losses)}, got {mode!r}")
        self.mode = mode
        self.loss = losses[mode]()
        self.register_buffer("real_label", torch.tensor(real_label))
        self.register_buffer("fake_label", torch.tensor(fake_label))

    def forward(self, logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = (self.real_label if target_is_real else self.fake_label).expand_as(logits)
        return self.loss(logits, target)
