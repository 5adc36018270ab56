"""Loading a model never installs a package: not the bridge's torchvision for multimodal checkpoints, not any
installer any dependency starts while a model loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import workbench as wb
from workbench.models.no_installs import InstallRefused, is_install_command, no_installs


@pytest.fixture
def fake_installers(tmp_path, monkeypatch):
    """pip, uv and conda first on PATH, each logging its arguments and failing: a test sees any that ran."""
    bin_dir, log = tmp_path / "bin", tmp_path / "installer-calls.log"
    bin_dir.mkdir()
    for name in ("pip", "pip3", "uv", "conda"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 1\n')
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


@pytest.fixture
def processes(fake_installers, monkeypatch):
    """Every process started (recorded); an installer's start fails loudly instead of running (so a broken
    guard can never reach the real pip). torchvision looks absent, as in an environment without it."""
    started: list = []
    real_popen = subprocess.Popen

    class RecordingPopen(real_popen):  # type: ignore[misc, valid-type]
        def __init__(self, args, *rest, **options):
            started.append(args)
            if is_install_command(args):
                raise OSError(f"test: installers are switched off, refused {args}")
            super().__init__(args, *rest, **options)

    monkeypatch.setattr(subprocess, "Popen", RecordingPopen)
    monkeypatch.setattr(os, "system", lambda command: started.append(command) or 1)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` fails: the bridge would install it
    return started


def _tiny_multimodal(folder):
    """A tiny Gemma 3 with a vision tower (the class of Gemma 3 4B and up), saved with the byte tokenizer."""
    import torch
    import transformers

    from workbench.models.tiny import byte_tokenizer

    text = transformers.Gemma3TextConfig(
        vocab_size=259, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=256, sliding_window=4, query_pre_attn_scalar=16,
        layer_types=["sliding_attention", "full_attention"], bos_token_id=256, eos_token_id=257, pad_token_id=258)
    vision = transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=28, patch_size=14)
    config = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                                       image_token_index=258, boi_token_index=256, eoi_token_index=257)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformers.Gemma3ForConditionalGeneration(config).eval().save_pretrained(folder)
    byte_tokenizer(folder.parent / ".tokenizer").save_pretrained(folder)
    return folder


def test_loading_a_multimodal_model_installs_nothing(processes, fake_installers, tmp_path):
    folder = _tiny_multimodal(tmp_path / "tiny-gemma3-vision")
    try:
        wb.load_model(folder, progress=False)
    except wb.WorkbenchError:
        pass  # loaded or refused, both fine here: what matters is that nothing was installed on the way
    assert not [args for args in processes if is_install_command(args)]
    assert not fake_installers.exists()


@pytest.mark.parametrize("run", [
    lambda: subprocess.run(["pip", "install", "torchvision"], check=False),
    lambda: subprocess.check_call(["uv", "pip", "install", "torchvision", "-q"]),
    lambda: subprocess.run("conda install -y torchvision", shell=True, check=False),
    lambda: os.system("pip3 install torchvision"),
    lambda: __import__("pip"),
], ids=["pip", "uv pip", "conda shell", "os.system", "import pip"])
def test_any_installer_started_during_a_load_is_refused(run, fake_installers):
    sys.modules.pop("pip", None)  # so that importing it runs the import machinery again
    with no_installs() as refused, pytest.raises(InstallRefused, match="never installs"):
        run()
    assert refused and not fake_installers.exists()


def test_outside_a_load_nothing_is_refused(fake_installers):
    with no_installs():
        pass
    assert subprocess.run(["pip", "install", "x"], check=False).returncode == 1  # the fake pip ran
    assert fake_installers.read_text() == "pip install x\n"
    assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True, check=True).stdout == b"1\n"


def test_install_commands_are_told_from_others():
    assert is_install_command([sys.executable, "-m", "pip", "install", "torchvision", "-q"])
    assert is_install_command("/usr/bin/uv pip install torch")
    assert is_install_command([b"conda", b"install", b"numpy"])
    assert not is_install_command(["pip", "list"]) and not is_install_command(["git", "status"])
    assert not is_install_command(["nvidia-smi", "--query-gpu=name"])
