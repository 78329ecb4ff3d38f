"""Nature-CNN dueling Q-networks for ALE: the network, loading, evaluation, and the training scripts."""
