"""Every bad input gets one line on stderr naming the file/row/column/key, exit code 2, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_csv

GOOD_ROWS = [
    ["a fine film", "positive"],
    ["a bad film", "negative"],
    ["lovely", "positive"],
    ["awful", "negative"],
]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    made = {
        "train": write_csv(tmp_path / "train.csv", ["text", "label"], GOOD_ROWS),
        "null_text": write_csv(tmp_path / "null_text.csv", ["text", "label"], [*GOOD_ROWS, ["", "positive"]]),
        "unseen": write_csv(
            tmp_path / "unseen.csv", ["text", "label"], [["meh", "neutral"], ["ok", "positive"]]
        ),
        "one_label": write_csv(tmp_path / "one_label.csv", ["text", "label"], [["a", "x"], ["b", "x"]]),
        "ragged": tmp_path / "ragged.csv",
        "empty": tmp_path / "empty.csv",
        "latin1": tmp_path / "latin1.csv",
        "xlsx": tmp_path / "train.xlsx",
        "bad_jsonl": tmp_path / "bad.jsonl",
        "bad_yaml": tmp_path / "bad.yaml",
        "no_config": tmp_path / "not-a-model",
        "busy_out": tmp_path / "busy-out",
        "dup_columns": tmp_path / "dup.csv",
        "mixed_labels": tmp_path / "mixed.jsonl",
        "empty_label": write_csv(tmp_path / "empty_label.csv", ["text", "label"], [*GOOD_ROWS, ["fine", ""]]),
        "not_records": tmp_path / "numbers.json",
        "no_weights": tmp_path / "no-weights",
        "pickled": tmp_path / "pickled",
        "half_checkpoint": tmp_path / "run" / "checkpoint-5",
        "summ_recipe": tmp_path / "summarize.yaml",
        "dialogs": tmp_path / "dialogs.jsonl",
        "no_summary": tmp_path / "no_summary.jsonl",
        "empty_summary": tmp_path / "empty_summary.jsonl",
        "first_unlabelled": tmp_path / "first_unlabelled.jsonl",
        "gappy": tmp_path / "gappy.jsonl",
    }
    made["first_unlabelled"].write_text('{"text": "meh"}\n{"text": "lovely", "label": "positive"}\n')
    made["gappy"].write_text(
        '{"text": "good", "label": "positive"}\n\n{"text": "bad", "label": "negative"}\n\n'
        '{"text": " ", "label": "negative"}\n',
        encoding="utf-8",
    )
    made["summ_recipe"].write_text("task: summarization\ndata:\n  document: dialogue\n", encoding="utf-8")
    dialog = '{"dialogue": "#Person1#: Hi.\\n#Person2#: Hello.", "summary": "They greet."}\n'
    made["dialogs"].write_text(dialog * 4, encoding="utf-8")
    made["no_summary"].write_text('{"dialogue": "#Person1#: Hi."}\n' * 4, encoding="utf-8")
    made["empty_summary"].write_text(dialog * 2 + '{"dialogue": "Hi.", "summary": " "}\n', encoding="utf-8")
    made["dup_columns"].write_text("text,label,text\na,positive,b\n", encoding="utf-8")
    made["mixed_labels"].write_text(
        '{"text": "good", "label": 1}\n{"text": "bad", "label": "negative"}\n', encoding="utf-8"
    )
    made["not_records"].write_text("[1, 2, 3]", encoding="utf-8")
    for folder in ("no_weights", "pickled"):
        made[folder].mkdir()
        (made[folder] / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    (made["pickled"] / "pytorch_model.bin").write_bytes(b"not loaded")
    made["half_checkpoint"].mkdir(parents=True)
    made["ragged"].write_text("text,label\ngood,positive\ntoo,many,fields\n", encoding="utf-8")
    made["empty"].write_text("", encoding="utf-8")
    made["latin1"].write_bytes("text,label\ncaf\xe9 au lait,positive\n".encode("latin-1"))
    made["xlsx"].write_bytes(b"PK\x03\x04")
    made["bad_jsonl"].write_text('{"text": "ok", "label": "positive"}\n{"text": broken\n', encoding="utf-8")
    made["bad_yaml"].write_text("task: classification\ndata: [unclosed\n", encoding="utf-8")
    made["no_config"].mkdir()
    made["busy_out"].mkdir()
    (made["busy_out"] / "keep.txt").write_text("precious")
    return made


# A summarization recipe on tiny-t5 with good data; each case below spoils one thing.
SUMMARIZE = ["@{summ_recipe}", "model=tiny-t5", "data.train={dialogs}", "data.validation={dialogs}"]

# (name, arguments with {placeholders} for the files above, what the message must contain)
CASES = [
    ("missing data file", ["data.train={tmp}/nope.csv"], "data.train: file {tmp}/nope.csv does not exist"),
    ("unsupported extension", ["data.train={xlsx}"], "unsupported extension '.xlsx'"),
    ("empty file", ["data.train={empty}"], "data.train: {empty} is empty"),
    ("not UTF-8", ["data.train={latin1}"], "is not valid UTF-8"),
    ("ragged CSV row", ["data.train={ragged}"], "{ragged} line 3: 3 fields where the header has 2"),
    ("broken JSONL line", ["data.train={bad_jsonl}"], "{bad_jsonl} line 2: invalid JSON"),
    (
        "missing text column",
        ["data.text=sentence"],
        "no column 'sentence' (set by data.text); columns are: text, label",
    ),
    (
        "missing label column",
        ["data.label=gold"],
        "no column 'gold' (set by data.label); columns are: text, label",
    ),
    ("null text", ["data.train={null_text}"], "{null_text} line 6: column 'text' (data.text) is empty"),
    (
        "unseen validation label",
        ["data.validation={unseen}"],
        "{unseen} line 2: label 'neutral' in column 'label' never occurs in data.train",
    ),
    ("a single class", ["data.train={one_label}", "data.validation=null"], "has only one label ('x')"),
    ("unknown recipe key", ["trianing.max_steps=3"], "unknown key 'trianing' (did you mean 'training'?)"),
    ("unknown training key", ["training.lerning_rate=3"], "did you mean 'learning_rate'?"),
    ("wrong value type", ["training.max_steps=many"], "training.max_steps must be an integer, got 'many'"),
    ("bad override syntax", ["max_steps"], "override 'max_steps': expected KEY=VALUE"),
    ("missing model folder", ["model=./no/such/model"], "model folder no/such/model does not exist"),
    ("folder without config", ["model={no_config}"], "has no config.json"),
    ("hub id offline", ["model=someone/some-model"], "can't be fetched from the Hugging Face hub"),
    (
        "non-empty output dir",
        ["output_dir={busy_out}"],
        "output_dir {busy_out} is not empty and holds no llmkit run (keep.txt)",
    ),
    ("duplicate CSV columns", ["data.train={dup_columns}"], "{dup_columns} header repeats column 'text'"),
    (
        "labels of mixed types",
        ["data.train={mixed_labels}"],
        "{mixed_labels} column 'label' mixes types (int, str)",
    ),
    ("empty label", ["data.train={empty_label}"], "{empty_label} line 6: label column 'label' is empty"),
    (
        "a label missing from the first test row",
        ["data.test={first_unlabelled}"],
        "data.test {first_unlabelled} line 1: label column 'label' is empty",
    ),
    (
        "empty text after blank JSONL lines",
        ["data.train={gappy}"],
        "{gappy} line 5: column 'text' (data.text) is empty",
    ),
    ("JSON not records", ["data.train={not_records}"], "expected a JSON list of objects"),
    ("model without weights", ["model={no_weights}"], "has no weights (no model.safetensors)"),
    ("pickle-only weights", ["model={pickled}"], "has only pickle weights (pytorch_model.bin)"),
    (
        "unknown model option",
        ["model={{name: tiny-bert, trust_code: true}}"],
        "unknown key 'model.trust_code'",
    ),
    ("data not a mapping", ["data=[a, b]"], "data must be a mapping of keys, got a list"),
    ("label_names not a list", ["data.label_names=5"], "data.label_names must be a list of strings"),
    (
        "bad precision",
        ["training.precision=half"],
        "training.precision must be one of auto, bf16, fp16, fp32",
    ),
    ("FSDP without a GPU", ["training.fsdp=full_shard"], "training.fsdp shards the model over GPUs"),
    (
        "resume from a half-written checkpoint",
        ["training.resume={half_checkpoint}"],
        "not a complete checkpoint",
    ),
    ("recipe file missing", ["@{tmp}/missing.yaml"], "recipe {tmp}/missing.yaml: no such file"),
    (
        "summarization: no document column",
        [*SUMMARIZE, "data.document=text"],
        "{dialogs}: no column 'text' (set by data.document); columns are: dialogue, summary",
    ),
    (
        "summarization: no summary column",
        [*SUMMARIZE, "data.train={no_summary}"],
        "{no_summary}: no column 'summary' (set by data.summary); columns are: dialogue; set data.summary=",
    ),
    (
        "summarization: empty summary",
        [*SUMMARIZE, "data.train={empty_summary}"],
        "{empty_summary} line 3: column 'summary' (data.summary) is empty; fill in or remove that row",
    ),
    (
        "summarization: a model neither seq2seq nor causal",
        [*SUMMARIZE, "model=tiny-bert"],
        "cannot summarize: it is neither a sequence-to-sequence model nor a causal LM (it is an encoder",
    ),
    (
        "summarization: prompt without the document",
        [*SUMMARIZE, "data.prompt=Summarize."],
        "data.prompt must contain {{document}} exactly once",
    ),
    (
        "summarization: lengths beyond the context",
        [*SUMMARIZE, "model=tiny-bart", "data.max_length=1024"],
        "data.max_length = 1024 is longer than the model's context (512 positions)",
    ),
    ("recipe YAML syntax", ["@{bad_yaml}"], "bad.yaml line 3, column 1: invalid YAML"),
]


def expand(text: str, files: dict[str, Path]) -> str:
    return text.format(tmp=files["train"].parent, **files)


@pytest.mark.parametrize(("name", "args", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(run_cli, files, tmp_path: Path, name, args, expected) -> None:
    arguments = [expand(a, files) for a in args]
    recipe = arguments.pop(0)[1:] if arguments[0].startswith("@") else "classification"
    out = tmp_path / "out"
    defaults = [
        "model=tiny-bert",
        f"data.train={files['train']}",
        f"data.validation={files['train']}",
        f"output_dir={out}",
        "training.max_steps=1",
    ]
    result = run_cli("finetune", recipe, *defaults, *arguments)

    assert result.exit_code == 2, (name, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expand(expected, files) in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists(), "nothing may be written for a bad input"
    assert (files["busy_out"] / "keep.txt").read_text() == "precious"


def test_predict_bad_inputs(run_cli, files, sentiment_files, tmp_path: Path) -> None:
    train, validation = sentiment_files
    out = tmp_path / "model"
    assert (
        run_cli(
            "finetune",
            "model=tiny-bert",
            f"data.train={train}",
            f"data.validation={validation}",
            f"output_dir={out}",
            "training.max_steps=1",
        ).exit_code
        == 0
    )
    wrong = write_csv(tmp_path / "wrong.csv", ["sentence"], [["hello"]])
    result = run_cli("predict", "--model", out, "--input", wrong)
    assert result.exit_code == 2
    assert f"--input {wrong}: no column 'text' (set by data.text); columns are: sentence" in result.stderr
    result = run_cli("predict", "--model", out, "--input", validation, "--output", tmp_path / "p.xlsx")
    assert result.exit_code == 2 and "use a .jsonl, .csv or .tsv file name" in result.stderr
    result = run_cli("predict", "--model", tmp_path / "nowhere", "--input", validation)
    assert result.exit_code == 2 and "does not exist" in result.stderr
    output = tmp_path / "predictions.jsonl"
    clash = write_csv(tmp_path / "clash.csv", ["text", "predicted_label"], [["hello", "gold"]])
    result = run_cli("predict", "--model", out, "--input", clash, "--output", output)
    assert result.exit_code == 2 and not output.exists()
    assert (
        f"error: --input {clash} already has a column 'predicted_label', which the predictions are written "
        f"to; rename or drop that column" == result.stderr.strip()
    )
    nowhere = tmp_path / "missing" / "predictions.jsonl"
    result = run_cli("predict", "--model", out, "--input", validation, "--output", nowhere)
    assert result.exit_code == 2
    assert f"--output {nowhere}: folder {nowhere.parent} does not exist" in result.stderr
    result = run_cli("summarize", "a document", "--model", "tiny-t5", "--output", nowhere)
    assert result.exit_code == 2
    assert f"--output {nowhere}: folder {nowhere.parent} does not exist" in result.stderr


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    """The installed entry point itself (a real subprocess), and LLMKIT_DEBUG=1 showing the traceback."""
    command = [sys.executable, "-m", "llmkit", "finetune", "data.train=missing.csv", "data.validation=null"]
    command += ["model=tiny-bert"]
    plain = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert plain.returncode == 2
    assert (
        plain.stderr.strip()
        == f"error: data.train: file missing.csv does not exist; check the path (relative to {tmp_path})"
    )
    debug = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        env={**__import__("os").environ, "LLMKIT_DEBUG": "1"},
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_predict_follows_its_own_column_advice(run_cli, finetune_tiny, tmp_path: Path) -> None:
    # a model trained on column 'text' predicting a file whose texts are in 'review': the error says
    # "set data.text=<one of them>", and predict takes that very override
    out = finetune_tiny("training.max_steps=1").output_dir
    reviews = write_csv(tmp_path / "reviews.csv", ["id", "review"], [["007", "great film"], ["008", "dull"]])
    advice = run_cli("predict", "--model", out, "--input", reviews)
    assert advice.exit_code == 2 and "set data.text=<one of them>" in advice.stderr
    result = run_cli("predict", "--model", out, "--input", reviews, "data.text=review")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["id"] for row in rows] == ["007", "008"] and all("predicted_label" in row for row in rows)
    typo = run_cli("predict", "--model", out, "--input", reviews, "data.txt=review")
    assert typo.exit_code == 2 and "unknown key 'data.txt' (did you mean 'text'?)" in typo.stderr
    other = run_cli("predict", "--model", out, "--input", reviews, "training.max_steps=1")
    assert other.exit_code == 2 and "predict takes data.KEY=VALUE overrides only" in other.stderr
