"""nnsight backend: the HF model wrapped by ``nnsight.LanguageModel`` (weights shared), locally or on NDIF.

nnsight reads the source of traced code, so the tracing lives here in a file, and it requires modules to
be visited in forward order: sites are sorted by layer and component before the trace.

Remote execution (``remote=True``) sends the same traces to NDIF, which hosts large models: the model is
then named by its Hugging Face id (``model.config.name_or_path``) and only its configuration is loaded here.
The key and the connection are checked when the backend is built, so nothing runs before a clear failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

import torch
from torch import nn

from probes.backends import COMPONENT_ORDER, Inputs, PassPlan, Trace
from probes.edits import Edit
from probes.errors import RemoteUnavailable
from probes.site import Site, block_list, locate, module_path


class NNsightBackend:
    name = "nnsight"

    def __init__(self, model: nn.Module, tokenizer: object | None, *, remote: bool = False) -> None:
        import warnings

        from nnsight import LanguageModel

        self.model = model
        self.remote = remote
        with warnings.catch_warnings():  # nnsight 0.8 suggests TransformersModel, which needs a repo id
            warnings.simplefilter("ignore")
            if remote:
                repo_id = check_remote_ready(model)
                self.lm = LanguageModel(repo_id, tokenizer=tokenizer)
            else:
                self.lm = LanguageModel(model, tokenizer=tokenizer)
        self.n_layers = len(block_list(model))

    def _envoy(self, path: str):
        return reduce(lambda env, part: env[int(part)] if part.isdigit() else getattr(env, part), path.split("."), self.lm)

    def run(
        self,
        inputs: Inputs,
        *,
        edits: Sequence[Edit] = (),
        capture: Sequence[Site] = (),
        keep_graph: bool = False,
    ) -> Trace:
        plan = PassPlan(edits, capture, keep_graph, save=lambda t: t.save())
        sites = sorted(plan.sites, key=lambda s: (s.layer % self.n_layers, COMPONENT_ORDER[s.component]))
        feed = {"input_ids": inputs} if isinstance(inputs, torch.Tensor) else dict(inputs)
        with self.lm.trace(feed, remote=self.remote):
            for site in sites:
                module, on_input = locate(self.model, site)
                envoy = self._envoy(module_path(self.model, module))
                value = envoy.input if on_input else envoy.output
                is_tuple = isinstance(value, tuple)
                new = plan.visit(site, value[0] if is_tuple else value)
                if site in plan.edits_at or keep_graph:
                    replacement = (new, *value[1:]) if is_tuple else new
                    if on_input:
                        envoy.input = replacement
                    else:
                        envoy.output = replacement
            output = self.lm.output.save()
        return plan.trace(output.logits)


def check_remote_ready(model: nn.Module, timeout_s: float = 3.0) -> str:
    """Return the model's hub id if NDIF can be used from here; otherwise raise one clear ``RemoteUnavailable``."""
    import os
    import socket
    from urllib.parse import urlparse

    from nnsight import CONFIG

    repo_id = getattr(getattr(model, "config", None), "name_or_path", "") or ""
    if not repo_id or os.path.isdir(repo_id) or "/" not in repo_id:
        raise RemoteUnavailable(
            f"remote execution needs a model hosted on NDIF, named by its Hugging Face id; this model is {repo_id!r}"
        )
    api_key = os.environ.get("NDIF_API_KEY") or CONFIG.API.APIKEY
    if not api_key:
        raise RemoteUnavailable(
            "remote execution needs an NDIF API key: set NDIF_API_KEY or run "
            "`python -c \"from nnsight import CONFIG; CONFIG.set_default_api_key('KEY')\"`"
        )
    CONFIG.API.APIKEY = api_key
    url = urlparse(CONFIG.API.HOST if "://" in CONFIG.API.HOST else f"https://{CONFIG.API.HOST}")
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise RemoteUnavailable(f"cannot reach NDIF at {CONFIG.API.HOST} (offline?): {exc}") from exc
    return repo_id
