import pytest
import torch
from safetensors.torch import save_file


@pytest.fixture
def model_folder(tmp_path):
    """A tiny full model folder with fp32, fp16 and bf16 tensors and a config."""
    folder = tmp_path / "m"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    tensors = {
        "fc1.weight": torch.randn(5, 3, generator=g),
        "fc1.bias": torch.randn(5, generator=g).half(),
        "conv.weight": torch.randn(4, 2, 3, 3, generator=g).bfloat16(),
    }
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"model_type": "tiny"}')
    return folder, tensors
