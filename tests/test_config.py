"""Recipe schema, YAML reading, dotted overrides and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmkit.core.errors import LlmkitError
from llmkit.recipe.loader import apply_overrides, bundled_recipes, load_recipe, parse_override

BASE = {"task": "classification", "model": "tiny-bert", "data": {"train": "train.csv"}}


def test_overrides_are_parsed_as_yaml_values() -> None:
    assert parse_override("training.max_steps=50") == (["training", "max_steps"], 50)
    assert parse_override("data.label_names=[neg, pos]") == (["data", "label_names"], ["neg", "pos"])
    assert parse_override("data.validation=null") == (["data", "validation"], None)
    assert parse_override("output_dir=runs/a=b") == (["output_dir"], "runs/a=b")


def test_overrides_create_nested_sections() -> None:
    raw = apply_overrides({"task": "classification"}, ["training.learning_rate=3e-4", "data.train=x.csv"])
    assert raw["training"] == {"learning_rate": "3e-4"}
    assert raw["data"] == {"train": "x.csv"}


@pytest.mark.parametrize("bad", ["max_steps", "=5", "training..max_steps=5", "training.=1"])
def test_bad_override_syntax(bad: str) -> None:
    with pytest.raises(LlmkitError, match="expected KEY=VALUE"):
        parse_override(bad)


def test_defaults_merge_and_training_types_are_coerced() -> None:
    recipe = load_recipe(
        BASE, ["training.learning_rate=3e-4", "training.max_steps=7", "training.save_strategy=no"]
    )
    assert recipe.training["save_strategy"] == "no"  # YAML 1.1 reads a bare `no` as false
    assert recipe.training["learning_rate"] == pytest.approx(3e-4)  # YAML reads 3e-4 as a string
    assert recipe.training["max_steps"] == 7
    assert recipe.training["per_device_train_batch_size"] == 32  # llmkit default
    assert recipe.data["text"] == "text" and recipe.data["validation_split"] == 0.1
    assert recipe.output_dir == "runs/classification"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainig.max_steps=5"], "unknown key 'trainig' (did you mean 'training'?)"),
        (["data.lable=y"], "unknown key 'data.lable' (did you mean 'label'?)"),
        (["training.max_step=5"], "unknown key 'training.max_step' (did you mean 'max_steps'?)"),
        (["training.max_steps=abc"], "training.max_steps must be an integer, got 'abc'"),
        (["training.learning_rate=fast"], "training.learning_rate must be a number, got 'fast'"),
        (["training.eval_strategy=sometimes"], "training.eval_strategy must be one of"),
        (["training.output_dir=x"], "set the top-level key output_dir"),
        (["data.max_length=long"], "data.max_length must be an integer, got 'long'"),
        (["data.validation_split=1.5"], "data.validation_split must be a number in [0, 1)"),
        (["task=clasification"], "unknown task 'clasification' (did you mean 'classification'?)"),
        (["overwrite=maybe"], "overwrite must be true or false"),
        (["model=5"], "model must be a string"),
        (["data.train=null"], "data.train or data.dataset is required"),
    ],
)
def test_validation_errors_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(LlmkitError) as info:
        load_recipe(BASE, overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("task: classification\ndata:\n  train: [unclosed\n", encoding="utf-8")
    with pytest.raises(LlmkitError, match=r"bad.yaml line \d+, column \d+: invalid YAML"):
        load_recipe(recipe)


def test_every_bundled_recipe_validates() -> None:
    names = bundled_recipes()
    assert {"classification", "sst2-minilm"} <= set(names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.task and recipe.model and (recipe.data["train"] or recipe.data["dataset"])


def test_recipe_by_bundled_name_and_default() -> None:
    assert load_recipe().source.endswith("classification.yaml")
    assert load_recipe("sst2-minilm").data["label_names"] == ["negative", "positive"]
    with pytest.raises(LlmkitError, match="did you mean 'sst2-minilm'"):
        load_recipe("sst2-minlm")


# -- the recipe reference ---------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]


def test_the_committed_recipe_reference_is_the_generated_one(run_cli) -> None:
    result = run_cli("recipes", "--reference")
    assert result.exit_code == 0, result.stderr
    committed = (REPO / "docs" / "recipe-reference.yaml").read_text(encoding="utf-8")
    assert committed == result.stdout, "regenerate: llmkit recipes --reference > docs/recipe-reference.yaml"


@pytest.mark.parametrize("task", ["classification", "preference", "fill-mask", "question-answering"])
def test_the_recipe_reference_holds_every_key_with_its_default(task: str) -> None:
    import yaml

    from llmkit.recipe.reference import recipe_reference

    text = recipe_reference(task)
    reference = yaml.safe_load(text)
    # every key of the schema, with llmkit's default: as a recipe it resolves to what the defaults give
    from_reference = load_recipe(reference, ["data.train=x.csv"])
    from_defaults = load_recipe({"task": task}, ["data.train=x.csv"])
    assert from_reference.data == from_defaults.data and from_reference.options == from_defaults.options
    assert from_reference.model == from_defaults.model
    assert from_reference.output_dir == from_defaults.output_dir
    assert set(reference["data"]) == set(from_defaults.data)
    assert reference["training"] == from_defaults.training  # llmkit's training defaults, each key
    # the sections that change what trains are shown commented out, key by key
    assert "# peft:" in text and "#   r: 16" in text
    if task == "classification":  # the default recipe's task: every key says what it is
        body = [line for line in text.splitlines() if line.startswith("  ") and ":" in line]
        data_and_model = body[: next(i for i, line in enumerate(body) if "per_device_train" in line)]
        uncommented = [
            line
            for i, line in enumerate(data_and_model)
            if "#" not in line and not data_and_model[i - 1].lstrip().startswith("#")
        ]
        assert not uncommented


def test_recipes_lists_each_recipe_with_a_whole_first_sentence(run_cli) -> None:
    result = run_cli("recipes")
    assert result.exit_code == 0, result.stderr
    descriptions = [line[23:] for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert len(descriptions) == len(bundled_recipes())
    for description in descriptions:
        assert description.rstrip().endswith((".", ")")), description  # not cut mid-sentence
    goemotions = next(d for d in descriptions if d.startswith("GoEmotions"))
    assert goemotions.endswith("one or more per comment (multi-label).")
