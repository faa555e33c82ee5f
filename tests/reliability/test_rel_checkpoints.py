"""Model checkpoints load only through safetensors or torch.load(weights_only=True); a tampered one
is refused with a clear error and nothing in it runs."""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hotdog_dagster.core.model.checkpoint import CheckpointRefused, read_state_dict
from hotdog_dagster.core.model.encoder import BUNDLED_DIR, ClipEncoder

pytestmark = [pytest.mark.reliability, pytest.mark.filterwarnings("ignore:Detected pickle protocol")]

BUNDLED = BUNDLED_DIR / "hotdog-sketch.safetensors"
REPO = Path(__file__).resolve().parents[2]


class _Payload:
    """Unpickling this runs ``os.system``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def _spec(path: Path) -> str:
    """``open_clip/<arch>/<weights>`` with an absolute path as the weights (``.../hotdog-sketch//tmp/x.pt``)."""
    return f"open_clip/hotdog-sketch/{path}"


def test_no_loader_in_the_package_can_unpickle_arbitrary_objects() -> None:
    """Every torch.load in the package passes weights_only=True; open_clip is never handed a local file."""
    offenders = []
    for path in (REPO / "hotdog_dagster").rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"torch\.load\((?P<args>[^)]*)\)", text):
            if "weights_only=True" not in m["args"]:
                offenders.append(f"{path.relative_to(REPO)}: {m.group(0)}")
        if re.search(r"\bpickle\.loads?\(|np\.load\([^)]*allow_pickle=True", text):
            offenders.append(f"{path.relative_to(REPO)}: pickle")
    assert offenders == []


def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    state = load_file(str(BUNDLED))
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as fh:
        pickle.dump({"state_dict": state, "extra": _Payload(marker)}, fh)
    with pytest.raises(CheckpointRefused, match=rf"checkpoint {evil} refused: it asks to run or build Python objects"):
        read_state_dict(evil)
    with pytest.raises(CheckpointRefused, match="refused"):
        ClipEncoder(_spec(evil), device="cpu")
    assert not marker.exists(), "the payload ran"


def test_a_plain_torch_checkpoint_still_loads_and_gives_the_same_vectors(tmp_path: Path) -> None:
    state = load_file(str(BUNDLED))
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, plain)
    a = ClipEncoder(_spec(plain), device="cpu").encode_texts(["a face", "two hot dogs"])
    b = ClipEncoder("open_clip/hotdog-sketch/bundled", device="cpu").encode_texts(["a face", "two hot dogs"])
    assert (a == b).all()


@pytest.mark.parametrize("damage", ["truncated", "header", "pickle-named-safetensors", "empty"])
def test_a_tampered_safetensors_file_is_refused(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "weights.safetensors"
    raw = BUNDLED.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 3])
    elif damage == "header":
        path.write_bytes(raw[:8] + b"{not json" + raw[17:])
    elif damage == "pickle-named-safetensors":
        with open(path, "wb") as fh:
            pickle.dump(_Payload(tmp_path / "pwned"), fh)
    else:
        path.write_bytes(b"")
    with pytest.raises(CheckpointRefused, match=rf"checkpoint {path} refused: not a readable safetensors file"):
        ClipEncoder(_spec(path), device="cpu")
    assert not (tmp_path / "pwned").exists()


def test_tensors_that_do_not_fit_the_architecture_are_refused(tmp_path: Path) -> None:
    state = load_file(str(BUNDLED))
    name = next(k for k, v in state.items() if v.ndim == 2)
    state[name] = torch.zeros(3, 3, dtype=state[name].dtype)  # edited: wrong shape
    path = tmp_path / "edited.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointRefused, match="do not fit the architecture"):
        ClipEncoder(_spec(path), device="cpu")


@pytest.mark.parametrize("suffix", [".ckpt", ".npz", ".pkl", ""])
def test_other_formats_are_refused_by_name(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"weights{suffix}"
    shutil.copy(BUNDLED, path)
    with pytest.raises(CheckpointRefused, match="unknown format"):
        read_state_dict(path)


def test_the_cli_says_it_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hotdog_dagster import cli

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as fh:
        pickle.dump(_Payload(tmp_path / "pwned"), fh)
    code = cli.main(["evaluate-model", "--model", f"open_clip/hotdog-sketch/{evil}", "-n", "4"])
    err = capsys.readouterr().err
    assert code == 2 and "refused" in err and str(evil) in err and err.count("\n") == 1
    assert not (tmp_path / "pwned").exists()
