"""DPO models as TRL writes them: a real tiny DPOTrainer run (adapter and full model), its beta read without trl,
log-probs equal to transformers/peft on the same inputs, and one-line errors for what cannot be scored."""

from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from diag import contract
from diag.credit import analysis
from diag.credit.encoding import encode
from diag.credit.sources import load_pair, read_training_args, resolve
from diag.errors import DiagError
from diag.runs import RunStore

PAIRS = [("What is 2+2?", "The answer is 4.", "The answer is 5."),
         ("Name a colour.", "Blue is a colour.", "Blue is a number.")]


def _pairs_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in PAIRS))
    return path


def _dpo(base: Path, out: Path, peft: bool) -> Path:
    """Two DPO steps with TRL, saving a checkpoint after each and the final model, as its docs show."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant",
                               "content": c}], "rejected": [{"role": "assistant", "content": r}]} for p, c, r in PAIRS])
    args = DPOConfig(output_dir=str(out), beta=0.3, max_steps=2, save_steps=1, per_device_train_batch_size=2,
                     learning_rate=5e-2, report_to=[], use_cpu=True, disable_tqdm=True, logging_steps=1)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"]) if peft else None
    trainer = DPOTrainer(model=str(base), args=args, train_dataset=data,
                         processing_class=AutoTokenizer.from_pretrained(base), peft_config=lora)
    trainer.train()
    trainer.save_model()
    return out


@pytest.fixture(scope="module")
def trl_runs(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("trl")
    root = tmp_path_factory.mktemp("trl")
    return {"adapter": _dpo(tiny_llama_dir, root / "dpo-lora", peft=True),
            "full": _dpo(tiny_llama_dir, root / "dpo-full", peft=False)}


def _direct_logps(model: torch.nn.Module, encoded) -> np.ndarray:
    """Response-token log-probs from one plain forward pass, computed here without our scorer."""
    ids = torch.tensor([encoded.ids])
    n = len(encoded.response_ids)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -n - 1:-1].double()
    return torch.log_softmax(logits, -1).gather(-1, ids[0, -n:, None])[:, 0].numpy()


@pytest.mark.slow  # shares a module fixture: two real TRL DPOTrainer runs, ~30 s on 2 cores
def test_trl_layout_is_what_the_loader_expects(trl_runs: dict[str, Path]) -> None:
    out = trl_runs["adapter"]
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"checkpoint-1", "checkpoint-2"}
    assert (out / "adapter_config.json").is_file() and (out / "training_args.bin").is_file()
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    args = read_training_args(out / "training_args.bin")
    assert args["class"] == "trl.trainer.dpo_config.DPOConfig" and args["beta"] == 0.3
    assert args["loss_type"] in ("sigmoid", ["sigmoid"])


@pytest.mark.slow  # shares a module fixture: two real TRL DPOTrainer runs, ~30 s on 2 cores
def test_trl_adapter_scores_equal_peft_directly_and_beta_comes_from_training_args(
        trl_runs: dict[str, Path], tiny_llama_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = trl_runs["adapter"]
    config = analysis.Config(policy=str(out), data=str(_pairs_file(tmp_path)), captum_steps=0, n_boot=50,
                             device="cpu")
    _, result = contract.run(analysis.ANALYSIS, config, store=RunStore())
    summary = result.summary()
    assert summary["beta"] == 0.3 and summary["beta_from"].startswith("training_args.bin (trl.")
    assert "the final model" in summary["policy_loaded"] and summary["reference"] == "adapter disabled"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), out).eval()
    tokenizer = resolve_tokenizer(tiny_llama_dir)
    diffs = []
    for item in result.items:
        encoded = encode(tokenizer, item.prompt, item.response)
        policy = _direct_logps(model, encoded)
        with model.disable_adapter():
            reference = _direct_logps(model, encoded)
        diffs += [np.abs(policy - item.policy_logp).max(), np.abs(reference - item.reference_logp).max()]
        np.testing.assert_allclose(item.reward, 0.3 * (policy - reference), atol=1e-5)
    assert max(diffs) < 1e-5  # float32 forward passes, batched (tree) vs one sequence
    assert any(abs(r) > 1e-4 for i in result.items for r in i.reward)  # the adapter was trained: not all ties


def resolve_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@pytest.mark.slow  # shares a module fixture: two real TRL DPOTrainer runs, ~30 s on 2 cores
def test_full_model_checkpoint_with_a_separate_reference_equals_transformers(
        trl_runs: dict[str, Path], tiny_llama_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    checkpoint = trl_runs["full"] / "checkpoint-1"
    source = resolve(str(checkpoint))
    assert source.chosen == "checkpoint checkpoint-1" and source.global_step == 1
    pair = load_pair(source.model_dir, str(tiny_llama_dir), source.training_args["beta"], "cpu")
    encoded = [encode(pair.tokenizer, p, r) for p, c, r in PAIRS]
    scores = pair.score(encoded, batch_size=2)
    policy = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    reference = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    diff = max(max(np.abs(_direct_logps(policy, e) - s.policy).max(),
                   np.abs(_direct_logps(reference, e) - s.reference).max()) for e, s in zip(encoded, scores))
    assert diff < 1e-5
    assert max(np.abs(s.reward).max() for s in scores) > 1e-4  # the checkpoint moved away from the reference


@pytest.mark.slow  # shares a module fixture: two real TRL DPOTrainer runs, ~30 s on 2 cores
def test_output_dir_without_a_final_model_takes_the_latest_checkpoint(trl_runs: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "killed-run"
    out.mkdir()
    for name in ("checkpoint-1", "checkpoint-2"):
        shutil.copytree(trl_runs["full"] / name, out / name)
    source = resolve(str(out))
    assert source.model_dir == str(out / "checkpoint-2") and source.global_step == 2
    assert source.chosen == f"the latest checkpoint checkpoint-2 ({out} holds no final model)"
    assert source.training_args["beta"] == 0.3
    final = resolve(str(trl_runs["full"]))
    assert final.model_dir == str(trl_runs["full"]) and "not its checkpoints checkpoint-1, checkpoint-2" in final.chosen


@dataclass
class DPOConfig:  # stands in for trl's class: the reader must not need (or import) it
    output_dir: str
    beta: float
    loss_type: str = "sigmoid"


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("zip_format", [True, False])
def test_training_args_are_read_without_trl_and_without_running_code(tmp_path: Path, zip_format: bool) -> None:
    path = tmp_path / "training_args.bin"
    torch.save(DPOConfig("out", beta=0.07), path, _use_new_zipfile_serialization=zip_format)
    assert read_training_args(path) == {"class": f"{__name__}.DPOConfig", "beta": 0.07, "loss_type": "sigmoid"}
    marker = tmp_path / "pwned"
    path.write_bytes(pickle.dumps(Exploit(marker)))
    assert "beta" not in read_training_args(path) and not marker.exists()  # Path.touch was never called


def test_corrupt_or_missing_beta_is_one_line_and_leaves_no_run(adapter_dir: Path, tiny_llama_dir: Path,
                                                              tmp_path: Path) -> None:
    data = str(_pairs_file(tmp_path))
    store = RunStore()
    broken = tmp_path / "broken"
    shutil.copytree(adapter_dir, broken)
    (broken / "diag_dpo.json").unlink()
    (broken / "training_args.bin").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DiagError, match=r"training_args.bin: not a readable training-arguments pickle "
                                        r"\(\w+\); pass --beta"):
        contract.run(analysis.ANALYSIS, analysis.Config(policy=str(broken), data=data, captum_steps=0,
                                                        device="cpu"), store=store)
    (broken / "training_args.bin").unlink()
    with pytest.raises(DiagError,
                       match=r"records no beta \(no training_args.bin with one, no diag_dpo.json\); pass --beta"):
        contract.run(analysis.ANALYSIS, analysis.Config(policy=str(broken), data=data, captum_steps=0,
                                                        device="cpu"), store=store)
    with pytest.raises(DiagError, match=r"records no beta \(no training_args.bin with one\); pass --beta"):
        contract.run(analysis.ANALYSIS, analysis.Config(policy=str(tiny_llama_dir), reference=str(broken),
                                                        data=data, captum_steps=0, device="cpu"), store=store)
    assert store.list() == []


def test_policy_equal_to_reference_reports_ties_with_wilson_intervals(tiny_llama_dir: Path, tmp_path: Path) -> None:
    config = analysis.Config(policy=str(tiny_llama_dir), reference=str(tiny_llama_dir), beta=0.1,
                             data=str(_pairs_file(tmp_path)), captum_steps=0, n_boot=50, device="cpu")
    summary = contract.run(analysis.ANALYSIS, config, store=RunStore())[1].summary()
    assert summary["preference_counts"] == {"wins": 0, "ties": 2, "losses": 0}
    accuracy, ties = summary["preference_accuracy"], summary["preference_ties"]
    # Wilson 95% for 0 of 2: [0, z^2/(n + z^2)] = [0, 0.6576]; for 2 of 2 the mirror image.
    assert accuracy["value"] == 0.0 and accuracy["low"] == 0.0 and accuracy["high"] == pytest.approx(0.6576, abs=1e-4)
    assert ties["value"] == 1.0 and ties["low"] == pytest.approx(0.3424, abs=1e-4) and ties["high"] == 1.0
    names = [m.name for m in analysis.GUIDE.headline(summary)]
    assert any(n.startswith("ties") for n in names)


def test_an_adapter_scored_against_a_separate_reference_model(adapter_dir: Path, tiny_llama_dir: Path) -> None:
    """A reference that is not the adapter's base is loaded on its own; naming the base keeps 'adapter disabled'."""
    pair = load_pair(str(adapter_dir), str(tiny_llama_dir), 0.25, "cpu")
    assert pair.reference is None  # the recorded base: the adapter is switched off, no second copy
    other = load_pair(str(tiny_llama_dir), str(adapter_dir), 0.25, "cpu")  # reference = base + adapter
    assert other.reference is not None
    e = encode(other.tokenizer, *PAIRS[0][:2])
    (mine,), (theirs,) = pair.score([e]), other.score([e])
    np.testing.assert_allclose(mine.reward, -theirs.reward, atol=1e-6)  # roles swapped: the reward flips sign


def test_the_app_form_takes_a_policy_reference_and_blank_beta(adapter_dir: Path, tiny_llama_dir: Path,
                                                              tmp_path: Path) -> None:
    """Form fields come from Config: a blank beta is None (recorded beta), and pinning fingerprints the model dir."""
    from apps.forms import ConfigForm

    form = ConfigForm(analysis.Config, analysis.Config())
    form.widgets["policy"].value = str(tiny_llama_dir)
    form.widgets["reference"].value = str(adapter_dir)
    form.widgets["beta"].value = ""
    form.widgets["data"].value = str(_pairs_file(tmp_path))
    config = analysis.ANALYSIS.pin(form.config())
    assert config.beta is None and config.reference == str(adapter_dir) and config.reference_sha256 is not None
    with pytest.raises(DiagError, match="records no beta"):
        contract.run(analysis.ANALYSIS, config, store=RunStore())
    form.widgets["beta"].value = "0.25"
    form.widgets["captum_steps"].value = 0
    summary = contract.run(analysis.ANALYSIS, analysis.ANALYSIS.pin(form.config()), store=RunStore())[1].summary()
    assert summary["beta"] == 0.25 and summary["reference_loaded"] == f"{adapter_dir}: the adapter in {adapter_dir}"


@pytest.mark.parametrize(("content", "message"), [
    (bytes(range(256)), "is not a UTF-8 text file"),
    (b'{"prompt": "caf\xe9"}\n', r"is not a UTF-8 text file \(line 1, byte 0xe9\)"),
    (None, "is a directory, not a file"),
])
def test_unreadable_data_files_are_one_line_and_leave_no_run(tmp_path: Path, content, message) -> None:
    path = tmp_path / "data"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    store = RunStore()
    with pytest.raises(DiagError, match=message):
        contract.run(analysis.ANALYSIS, analysis.Config(data=str(path), device="cpu"), store=store)
    assert store.list() == []


def _conversation(prompt: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def test_trl_dataset_layouts_score_as_our_pairs(adapter_dir: Path, tmp_path: Path) -> None:
    """TRL's preference layouts (UltraFeedback-binarized: prompt + conversations; implicit prompt: conversations
    only; explicit conversational prompt) give the same per-token rewards as the same pairs as strings."""
    layouts = {
        "strings": [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS],
        "ultrafeedback": [{"prompt": p, "prompt_id": str(i), "chosen": _conversation(p, c),
                           "rejected": _conversation(p, r), "score_chosen": 8.0, "score_rejected": 3.0}
                          for i, (p, c, r) in enumerate(PAIRS)],
        "implicit": [{"chosen": _conversation(p, c), "rejected": _conversation(p, r)} for p, c, r in PAIRS],
        "explicit": [{"prompt": [{"role": "user", "content": p}],
                      "chosen": [{"role": "assistant", "content": [{"type": "text", "text": c}]}],
                      "rejected": [{"role": "assistant", "content": r}]} for p, c, r in PAIRS],
    }
    rewards = {}
    for name, lines in layouts.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        config = analysis.Config(policy=str(adapter_dir), data=str(path), captum_steps=0, n_boot=20, device="cpu")
        items = contract.run(analysis.ANALYSIS, config, store=RunStore())[1].items
        rewards[name] = [(i.prompt, i.response, i.reward) for i in items]
    for name in ("ultrafeedback", "implicit", "explicit"):
        assert rewards[name] == rewards["strings"]


def test_multi_turn_conversations_are_scored_in_their_context(adapter_dir: Path, tmp_path: Path) -> None:
    from diag.credit.inputs import read_jsonl

    turns = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello! How can I help?"},
             {"role": "user", "content": PAIRS[0][0]}]
    path = tmp_path / "hh.jsonl"
    path.write_text(json.dumps({"chosen": [*turns, {"role": "assistant", "content": PAIRS[0][1]}],
                                "rejected": [*turns, {"role": "assistant", "content": PAIRS[0][2]}]}) + "\n")
    (record,) = read_jsonl(path)
    assert record["prompt"] == turns and record["chosen"] == PAIRS[0][1]
    pair = load_pair(str(adapter_dir), None, 0.1, "cpu")
    encoded = encode(pair.tokenizer, record["prompt"], record["chosen"])
    context = pair.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    assert pair.tokenizer.decode(encoded.ids[:encoded.response_start]) == context
    assert pair.tokenizer.decode(encoded.response_ids).startswith(PAIRS[0][1])
    from diag.credit.inputs import prompt_text

    assert prompt_text(record["prompt"]).splitlines() == ["user: Hi.", "assistant: Hello! How can I help?",
                                                          f"user: {PAIRS[0][0]}"]


@pytest.mark.parametrize(("line", "message"), [
    ({"chosen": _conversation("a?", "x"), "rejected": _conversation("b?", "y")},
     "conversations do not share the messages before their answers"),
    ({"prompt": "a?", "chosen": [{"role": "user", "content": "a?"}], "rejected": "y"},
     "chosen: the conversation must end with the assistant's answer"),
    ({"prompt": "a?", "chosen": [{"role": "assistant"}], "rejected": "y"}, "string role and content"),
    ({"prompt": "a?", "chosen": [{"role": "assistant", "content": [{"type": "image_url", "image_url": {}}]}],
      "rejected": "y"}, "the assistant's answer has no text to score"),
    ({"prompt": "a?", "chosen": [{"role": "assistant", "content": 3}], "rejected": "y"},
     "message content must be a string, null or a list of parts"),
    ({"chosen": "x", "rejected": "y"}, "field 'prompt' must be a non-empty string or a list of chat messages"),
])
def test_malformed_conversations_are_named(tmp_path: Path, line: dict, message: str) -> None:
    from diag.credit.inputs import read_jsonl

    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "q?", "chosen": "x", "rejected": "y"}) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(DiagError, match=f":2: .*{message}"):
        read_jsonl(path)
