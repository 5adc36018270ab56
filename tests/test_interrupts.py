"""Ctrl-C at any moment never leaves the model edited: real SIGINTs at random times against every
weight-editing experiment, and a hash of every parameter compared after each interrupt."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

CHILD = textwrap.dedent("""
    import faulthandler, hashlib, signal, time, torch, workbench as wb

    # Ctrl-C as an interactive session has it: a process started in the background (as CI starts pytest) ignores
    # SIGINT, and its children inherit that; every Ctrl-C would be dropped, which is right for them but tests nothing
    signal.signal(signal.SIGINT, signal.default_int_handler)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test's diagnosis when a Ctrl-C goes unanswered
    copy = torch.Tensor.copy_

    def slow_copy(self, *args, **kwargs):  # a restore as slow as a big model's: interrupts often land in it
        time.sleep(0.003)
        return copy(self, *args, **kwargs)

    torch.Tensor.copy_ = slow_copy
    model = wb.load_model("tiny-llama")
    mlp = model.mlp_weights(1)
    with torch.no_grad():  # a planted super weight, so every experiment has something to edit
        mlp.W_in[:, 7] *= 40.0
        mlp.W_out[7, 11] = 25.0

    def digest():
        h = hashlib.sha256()
        for _, p in sorted(model.named_parameters()):
            h.update(p.detach().contiguous().numpy().tobytes())
        return h.hexdigest()

    reference = digest()
    weights = ((1, 11, 7),)
    small = dict(eval_windows=1, window=16, cache=False)
    calls = [
        lambda: wb.super_weights(model, **small),
        lambda: wb.prune_super_weights(model, weights=weights, **small),
        lambda: wb.scale_super_weights(model, weights=weights, **small),
        lambda: wb.prune_outliers(model, weights=weights, **small),
        lambda: wb.quantize_super_weights(model, weights=weights, **small),
        lambda: wb.trace_super_weight(model, weight=weights[0], prompt="Summer is hot. Winter is", cache=False),
    ]
    print("ready", flush=True)
    while True:
        try:
            for call in calls:
                call()
        except KeyboardInterrupt:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # no second interrupt during the check
            print("interrupted", digest() == reference, flush=True)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
""")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_random_sigints_never_leave_the_model_edited(tmp_path):
    env = dict(os.environ, WORKBENCH_PROGRESS="0", WORKBENCH_CACHE=str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "ready"
        rng = random.Random(0)
        results = []
        for _ in range(25):
            time.sleep(rng.uniform(0.0, 0.4))
            child.send_signal(signal.SIGINT)
            if not select.select([child.stdout], [], [], 60)[0]:  # unanswered: fail with the child's stacks
                child.send_signal(signal.SIGUSR1)
                time.sleep(2)
                child.kill()
                pytest.fail(f"a Ctrl-C went unanswered for 60 s after {len(results)} answered; the child's stacks:\n"
                            f"{child.stderr.read()[-4000:]}")
            line = child.stdout.readline().strip()
            assert line, f"the child died: {child.stderr.read()[-2000:]}"
            results.append(line)
        assert results == ["interrupted True"] * len(results)
    finally:
        child.kill()
        child.wait()
