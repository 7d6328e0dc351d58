"""The paper preset: the real Cosmos-Predict2-2B via --pretrained in the 2×2 layout, GPU only."""
import pytest

from world2act import World2ActError
from world2act.presets import paper
from world2act.worldmodel.configs import get_config


def test_paper_preset_fine_tunes_the_2b_checkpoint_in_the_2x2_layout(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD2ACT_COSMOS_2B", str(tmp_path / "ckpt"))
    stages, meta = paper()
    by = {s.name: s for s in stages}
    wm = by["wm"].args
    assert wm[wm.index("--model") + 1] == "cosmos-predict2-2b"
    assert wm[wm.index("--pretrained") + 1] == str(tmp_path / "ckpt")
    demos = by["demos"].args
    size = int(demos[demos.index("--image-size") + 1])
    cfg = get_config("cosmos-predict2-2b", image_size=(size, size), frame_stride=4, fps=5.0)
    assert cfg.layout == "2x2" and cfg.frame_size == (2 * size, 2 * size) and cfg.text_embed_dim == 1024
    assert "requires_cuda" in meta


def test_pipeline_paper_refuses_to_start_without_cuda(monkeypatch, tmp_path, capsys):
    import torch

    from world2act.cli import main as cli
    from world2act.pipeline import run_pipeline

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    with pytest.raises(World2ActError, match="no CUDA GPU on this machine: .*Cosmos-Predict2"):
        run_pipeline("paper", out)
    assert not out.exists()  # refused before any stage (or folder)
    rc = cli(["pipeline", "--preset", "paper", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "CUDA" in err[0] and not out.exists()
