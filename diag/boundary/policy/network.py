"""The Nature-CNN dueling Q-network (Mnih et al. 2015; Wang et al. 2016) on 4x84x84 uint8 ALE frame stacks."""

from __future__ import annotations

import torch
from torch import nn

OBS_SHAPE = (4, 84, 84)


class QNetwork(nn.Module):
    """Nature CNN trunk, one 512-unit hidden layer, then dueling value and advantage heads.

    Input is either uint8 frames in [0, 255] or float frames already scaled to [0, 1]; the analysis works on the
    float form so that perturbations (eps = 1/255) and gradients live in pixel-intensity units.
    """

    def __init__(self, n_actions: int) -> None:
        super().__init__()
        self.n_actions = n_actions
        self.trunk = nn.Sequential(
            nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(3136, 512), nn.ReLU(),
        )
        self.value = nn.Linear(512, 1)
        self.advantage = nn.Linear(512, n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() / 255.0 if obs.dtype == torch.uint8 else obs
        hidden = self.trunk(x)
        advantage = self.advantage(hidden)
        return self.value(hidden) + advantage - advantage.mean(dim=1, keepdim=True)
