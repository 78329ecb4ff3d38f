"""Nature-CNN policies on 4x84x84 ALE frame stacks: our dueling Q-network, and the plain Q-networks and actors
CleanRL and SB3 train."""

from __future__ import annotations

import itertools

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


def nature_trunk(in_channels: int = 4, features_dim: int = 512) -> nn.Sequential:
    """Nature CNN up to the hidden layer; indices 0, 2, 4 (convolutions) and 7 (linear) as in CleanRL's layout."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3136, features_dim), nn.ReLU(),
    )


class ImportedNetwork(nn.Module):
    """Nature CNN with a plain (non-dueling) head, as other libraries train it: Q-values or an actor's logits.

    Covers CleanRL's ``dqn_atari`` (head = one linear layer) and ``ppo_atari`` (the actor's linear layer),
    Stable-Baselines3's DQN ``CnnPolicy`` (a linear head after optional hidden layers), its actor-critic
    ``CnnPolicy`` (PPO, A2C: the policy branch of ``mlp_extractor``, then ``action_net``) and sb3-contrib's QR-DQN,
    whose head emits ``n_quantiles x n_actions`` values viewed as ``[batch, n_quantiles, n_actions]`` and averaged
    over quantiles into Q-values, exactly as its ``_predict`` does, and CleanRL's ``c51_atari``, whose head emits
    ``n_actions x n_atoms`` logits whose per-action softmax weighs the ``atoms`` (its Q-values, as its
    ``get_action`` computes them). Each library's greedy action is the argmax of these outputs. Inputs follow ``QNetwork``'s convention (uint8 frames, or floats in [0, 1]);
    ``normalize_images=False`` (an SB3 option) means the original network saw raw 0..255 values.
    """

    def __init__(self, n_actions: int, head_hidden: tuple[int, ...] = (), features_dim: int = 512,
                 n_quantiles: int = 1, normalize_images: bool = True, activation: type[nn.Module] = nn.ReLU,
                 n_atoms: int = 0) -> None:
        super().__init__()
        self.n_actions = n_actions
        self.n_quantiles = n_quantiles
        self.normalize_images = normalize_images
        self.features = nature_trunk(OBS_SHAPE[0], features_dim)
        sizes = (features_dim, *head_hidden)
        layers: list[nn.Module] = []
        for size_in, size_out in itertools.pairwise(sizes):
            layers += [nn.Linear(size_in, size_out), activation()]
        self.head = nn.Sequential(*layers, nn.Linear(sizes[-1], n_actions * n_quantiles * max(n_atoms, 1)))
        if n_atoms:
            self.register_buffer("atoms", torch.zeros(n_atoms))  # the support, loaded with the weights

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if obs.dtype == torch.uint8:
            x = obs.float() / 255.0 if self.normalize_images else obs.float()
        else:
            x = obs if self.normalize_images else obs * 255.0
        out = self.head(self.features(x))
        if self.n_quantiles > 1:
            out = out.view(-1, self.n_quantiles, self.n_actions).mean(dim=1)
        if hasattr(self, "atoms"):
            out = (torch.softmax(out.view(-1, self.n_actions, len(self.atoms)), dim=2) * self.atoms).sum(2)
        return out
