"""Pack what ``gpu_check.py`` needs for a GPU machine that can download nothing: data heads, model configs.

    python benchmarks/gpu_bundle.py .gpu            # then copy .gpu (and wheels) to the GPU machine
    python benchmarks/gpu_check.py --data-root .gpu/data \
        --stand-in minilm-l6=.gpu/models/minilm-l6 --stand-in smollm2-135m=.gpu/models/smollm2-135m

Writes DIR/data: the first rows of every ``../shared/data`` file a bundled recipe's ``# shared data:`` line
names (JSON Lines, JSON arrays, CSV/TSV with their header, text files cut at a blank line), and
DIR/models/ALIAS: each real alias's config, tokenizer and chat files without the weights, for
``gpu_check.py --stand-in``. A few MB in all.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_check import REPO, SHARED_DATA_DIR, shared_data_overrides

REAL_ALIASES = ("minilm-l6", "smollm2-135m")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def data_files() -> set[str]:
    """Every ``../shared/data/...`` path the bundled recipes' shared-data lines name."""
    files = set()
    for overrides in shared_data_overrides().values():
        for override in overrides:
            value = override.split("=", 1)[1]
            if value.startswith(SHARED_DATA_DIR):
                files.add(value[len(SHARED_DATA_DIR) + 1 :])
    return files


def write_head(source: Path, target: Path, rows: int) -> None:
    """The first ROWS records of SOURCE in its own format."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix == ".json":
        target.write_text(json.dumps(json.loads(source.read_text(encoding="utf-8"))[:rows]), encoding="utf-8")
        return
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    if source.suffix in (".jsonl", ".csv", ".tsv"):
        head = lines[: rows + 1]
    else:  # plain text: ten lines a row, cut after a blank line so a sentence or document stays whole
        head = lines[: rows * 10]
        blank = max((i for i, line in enumerate(head) if not line.strip()), default=len(head) - 1)
        head = head[: blank + 1]
    target.write_text("".join(head), encoding="utf-8")


def copy_config(alias: str, target: Path) -> None:
    """The alias's folder without its weights."""
    from llmkit.models.resolve import resolve_model

    target.mkdir(parents=True, exist_ok=True)
    for item in resolve_model(alias).iterdir():
        if item.is_file() and not item.name.endswith(WEIGHT_SUFFIXES):
            shutil.copy2(item, target / item.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="bundle folder")
    parser.add_argument("--rows", type=int, default=400, help="records kept from each data file")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    for name in sorted(data_files()):
        write_head(args.shared / name, args.out / "data" / name, args.rows)
    for alias in REAL_ALIASES:
        copy_config(alias, args.out / "models" / alias)
    print(f"wrote {args.out}: {sum(f.stat().st_size for f in args.out.rglob('*') if f.is_file()) >> 10} KiB")


if __name__ == "__main__":
    main()
