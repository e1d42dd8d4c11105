"""`llmkit validate`'s pre-flight chat checks, each passing on llmkit's template and failing on a template (or
prompt) made to fail it: the training prompt is the inference prompt token for token, the token that stops
generation carries loss, some tokens carry loss at all; with --no-strict a failure is a warning line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from llmkit.models.resolve import resolve_model
from llmkit.tasks.causal_lm import DEFAULT_CHAT_TEMPLATE

#: llmkit's template with the EOS after each reply left out: nothing teaches the model to stop.
NO_EOS = DEFAULT_CHAT_TEMPLATE.replace(" + eos_token", "")
#: Turns glued together: a reply's last word and the next turn's first merge into other tokens when the
#: whole conversation is tokenized at once (as inference does) than when each turn is tokenized alone.
GLUED = (
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)
#: Assistant turns are not rendered at all: "assistant-only" loss then masks every token.
NO_REPLIES = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ 'Q: ' + message['content'] + '\n' }}"
    "{% endif %}{% endfor %}"
)


def model_with_template(tmp_path: Path, template: str) -> Path:
    """tiny-gpt2 with a chat template of its own."""
    folder = tmp_path / "model"
    shutil.copytree(resolve_model("tiny-gpt2"), folder)
    (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    return folder


@pytest.fixture
def chats(tmp_path: Path) -> Path:
    rows = []
    for number in range(6):
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"hello {number}"},
                    {"role": "assistant", "content": "hi"},
                    {"role": "user", "content": "name a fruit"},
                    {"role": "assistant", "content": "apple"},
                ]
            }
        )
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def validate_chat(run_cli, chats: Path, model: str | Path, *extra: str):
    return run_cli(
        "validate",
        "instruct-alpaca",
        f"model={model}",
        f"data.train={chats}",
        "data.validation_split=0",
        "data.max_length=256",  # tiny-gpt2's context
        *extra,
    )


def test_llmkit_template_passes_every_check_and_marks_the_loss(run_cli, chats: Path) -> None:
    result = validate_chat(run_cli, chats, "tiny-gpt2")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "chat checks (first 6 training sequences):" in out
    assert "### Response:\\n«hi<|endoftext|>\\n\\n»### Instruction:" in out  # loss tokens marked
    assert "training prompt = apply_chat_template(add_generation_prompt=True) token for token: 6 of 6" in out
    assert "stop token '<|endoftext|>' inside the loss: 6 of 6 untruncated examples" in out
    assert "tokens carrying loss: " in out and "truncated 0, dropped 0 of 6 sequences" in out


def test_a_template_without_eos_in_the_reply_fails_the_stop_check(
    run_cli, chats: Path, tmp_path: Path
) -> None:
    model = model_with_template(tmp_path, NO_EOS)
    result = validate_chat(run_cli, chats, model)
    assert result.exit_code == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: chat check failed: the token that stops generation ('<|endoftext|>') ")
    assert "carries no loss in 6 of 6 untruncated examples" in error and "--no-strict" in error

    lenient = validate_chat(run_cli, chats, model, "--no-strict")
    assert lenient.exit_code == 0, lenient.stderr
    assert "  warning: the token that stops generation ('<|endoftext|>') carries no loss" in lenient.stdout
    assert "training prompt = apply_chat_template" in lenient.stdout  # the other checks still pass


def test_a_template_that_tokenizes_differently_at_inference_fails_the_prompt_check(
    run_cli, chats: Path, tmp_path: Path
) -> None:
    result = validate_chat(run_cli, chats, model_with_template(tmp_path, GLUED))
    assert result.exit_code == 2
    error = result.stderr.strip().splitlines()[-1]
    assert "chat check failed: example 1: the training prompt (" in error
    assert "differs from apply_chat_template(..., add_generation_prompt=True) (" in error
    assert "(6 of 6 examples differ)" in error and "(and 1 more failed check(s))" in error  # no EOS either


def test_a_template_that_renders_no_reply_fails_the_loss_check(run_cli, chats: Path, tmp_path: Path) -> None:
    result = validate_chat(run_cli, chats, model_with_template(tmp_path, NO_REPLIES))
    assert result.exit_code == 2
    error = result.stderr.strip().splitlines()[-1]
    assert "chat check failed: no token carries loss: the masking hides every reply" in error


@pytest.mark.parametrize("model", ["tiny-gpt2", pytest.param("smollm2-135m", marks=pytest.mark.slow)])
def test_decoder_only_summarization_prompts_are_what_inference_tokenizes(
    run_cli, tmp_path: Path, model
) -> None:
    """Repro: the prompt was tokenized in pieces (template head, document, tail), and "\\n\\n" before the
    document became one token where the whole rendered chat, as inference tokenizes it, has two (SmolLM2's
    tokenizer; tiny-gpt2's 512-token vocabulary has no "\\n\\n" token)."""
    dialogues = tmp_path / "dialogues.jsonl"
    rows = [
        {"dialogue": f"#Person1#: Hi, {name}.\n#Person2#: Hello!", "summary": f"They greet {name}."}
        for name in ("Ann", "Bob", "Cy", "Di")
    ]
    dialogues.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    common = [f"model={model}", f"data.train={dialogues}", "data.validation=null", "data.validation_split=0"]
    result = run_cli("validate", "summarize-dialogsum", *common, "data.max_length=256")
    assert result.exit_code == 0, result.stderr
    assert "token for token: 4 of 4 examples" in result.stdout


def test_preference_recipes_get_the_checks_for_chosen_and_rejected(run_cli, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"say {w}", "chosen": w, "rejected": f"not {w}"} for w in ("cat", "dog", "owl")]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"task: preference\ndata: {{train: {pairs}, validation_split: 0}}\n")
    result = run_cli(
        "validate",
        recipe,
        "model=tiny-gpt2",
        "data.use_chat_template=false",
        "data.max_length=128",
        "data.max_prompt_length=64",
    )
    assert result.exit_code == 0, result.stderr
    assert "chat checks (first 6 training sequences):" in result.stdout  # chosen and rejected of 3 pairs
    assert "token for token: 6 of 6 examples" in result.stdout
    assert "chosen (" in result.stdout and "rejected (" in result.stdout


def test_packing_reports_how_full_the_rows_are(run_cli, chats: Path) -> None:
    result = validate_chat(run_cli, chats, "tiny-gpt2", "data.packing=true", "data.max_length=128")
    assert result.exit_code == 0, result.stderr
    assert re.search(r"packing: \d+ rows of up to 128 tokens, \d+\.\d% full", result.stdout)
