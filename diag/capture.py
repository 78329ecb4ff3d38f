"""The smallest analysis: capture residual activations of a prompt at chosen layers.

It doubles as the reference for the contract (see ``diag.contract``): a Config, a Result, ``compute`` and the
``ANALYSIS`` value that declares them. It imports no numpy or torch at the top, so the CLI reads its Config fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from diag.contract import Analysis, Cli, DtypeName, checked, validated
from diag.report.sections import Guide, Metric

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

    from diag.progress import Progress
    from diag.run_dir import Run


@dataclass(frozen=True)
@validated
class Config:
    # named model, HF id or local directory
    model: str = checked("smollm2-135m-instruct", kind="model", cli=Cli(argument="required"))
    model_sha256: str | None = None  # set by Analysis.pin for a local model dir: edits make a new run
    prompt: str = "The capital of France is"  # text to run through the model
    # comma-separated layer indices
    layers: tuple[int, ...] = checked((0,), low=0, high=999, max_len=1000, layer_of="model")
    # resid_pre, resid_post, attn_out or mlp_out
    component: Literal["resid_pre", "resid_post", "attn_out", "mlp_out"] = "resid_post"
    backend: Literal["torch", "transformer_lens", "nnsight"] = "torch"  # torch, transformer_lens or nnsight
    device: str = checked("auto", kind="device")  # auto, cpu or cuda[:N]
    # bfloat16 / float16: the result carries the measured KL to float32 (``numerics``)
    dtype: DtypeName = "float32"


class Summary(TypedDict):
    """What ``Result.summary()`` holds (``--json``, the report, the app)."""

    tokens: int
    next_token: str
    # site key -> shape, norm, mean_token_norm, max_token_norm, token_norms (one per prompt token)
    sites: dict[str, dict[str, Any]]
    numerics: dict[str, Any]


@dataclass
class Result:
    tokens: list[str]
    activations: dict[str, np.ndarray]  # site key -> [seq, d]
    next_token: str
    numerics: dict[str, Any] = field(default_factory=dict)  # device, dtype and its faithfulness (zoo.lm)

    def token_norms(self) -> dict[str, np.ndarray]:
        """L2 norm of each token's activation, per site: [tokens]."""
        import numpy as np  # here, not at the top: ``diag --help`` reads this module's Config

        return {key: np.linalg.norm(a, axis=-1) for key, a in self.activations.items()}

    def summary(self) -> Summary:
        import numpy as np

        norms = self.token_norms()
        return {
            "tokens": len(self.tokens),
            "next_token": self.next_token,
            "sites": {
                key: {"shape": list(a.shape), "norm": float(np.linalg.norm(a)),
                      "mean_token_norm": float(norms[key].mean()), "max_token_norm": float(norms[key].max()),
                      "token_norms": [float(v) for v in norms[key]]}
                for key, a in self.activations.items()
            },
            "numerics": self.numerics,
        }

    def save(self, run: Run) -> None:
        run.write_arrays("activations", self.activations)
        run.write_json("tokens.json", {"tokens": self.tokens, "next_token": self.next_token,
                                       "numerics": self.numerics})
        run.write_figure("token_norms", self.token_norm_figure())

    def token_norm_figure(self) -> Figure:
        """L2 norm of each token's activation at every captured site: where the residual stream grows."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.4, 3.4))
        ax = fig.subplots()
        for key, norms in self.token_norms().items():
            ax.plot(norms, marker="o", label=key)
        labels = [t.replace("\u0120", "\u2423") for t in self.tokens]  # GPT-2 style space marker -> visible space
        ax.set_xticks(range(len(self.tokens)), labels, rotation=45)
        ax.set(xlabel="prompt token", ylabel="activation L2 norm", yscale="log",
               title="Per-token activation norm by site")
        ax.legend(fontsize=8)
        return fig

    @classmethod
    def load(cls, run: Run) -> Result:
        meta = run.read_json("tokens.json")
        return cls(meta["tokens"], run.read_arrays("activations"), meta["next_token"], meta.get("numerics", {}))


def compute(config: Config, run: Run, progress: Progress) -> Result:
    import torch  # here, not at the top: a refused config never waits for torch's second of import

    from diag.zoo.lm import load_lm_numerics
    from probes import Site, get_backend

    model, tokenizer, numerics = load_lm_numerics(config.model, config.device, config.dtype)
    sites = [Site(layer, config.component) for layer in config.layers]  # type: ignore[arg-type]
    backend = get_backend(config.backend, model, tokenizer)
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in tokenizer(config.prompt, return_tensors="pt").items()}
    progress(0, 1, "capture")
    with torch.no_grad():
        trace = backend.run(inputs, capture=sites)
    progress(1, 1, "capture")
    ids = inputs["input_ids"][0].tolist()
    return Result(
        tokens=tokenizer.convert_ids_to_tokens(ids),
        activations={s.key(): trace.activations[s][0].float().cpu().numpy() for s in sites},
        next_token=tokenizer.decode(int(trace.logits[0, -1].argmax())),
        numerics=numerics,
    )


def audit_config(scale: float = 1.0) -> Config:
    """One forward pass on the embedded model; ``scale`` does not change its cost (it is one prompt)."""
    return Config(layers=(0, 10, 20, 29))


def _headline(summary: dict[str, Any]) -> list[Metric]:
    metrics = [Metric("predicted next token", repr(summary["next_token"])), Metric("prompt tokens", summary["tokens"])]
    return metrics + [Metric(f"{site}: mean per-token L2 norm", stats["mean_token_norm"])
                      for site, stats in summary["sites"].items()]


GUIDE = Guide(
    question=(
        "What are the activations of one prompt at the chosen layers, and which token does the model predict "
        "next? This is the instrument the other analyses build on, run here to record the model's provenance."
    ),
    limitations=[
        "One prompt only: the norms describe this input, not the model's typical activation scale.",
        "No baseline applies: capture is an instrument, not a test with an expected outcome.",
    ],
    headline=_headline,
    captions={"token_norms": "L2 norm of each prompt token's activation at every captured site (log scale)."},
)



ANALYSIS = Analysis(
    name="capture", config=Config, result=Result, compute=compute, audit_config=audit_config, guide=GUIDE,
    summary=Summary, comparable="diag.compare:capture_quantities",
    description="Capture activations of PROMPT at LAYERS; prints shapes and norms and saves a run.",
)
