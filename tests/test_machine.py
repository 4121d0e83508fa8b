"""machine: TensorFlow imported as cytoops runs it, with its oneDNN kernels on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cytoops import machine

ONEDNN_ON = "from tensorflow.python.util import _pywrap_util_port as u; print(u.IsMklEnabled())"


@pytest.mark.parametrize("flag, on", [(None, True), ("1", True), ("0", False)])
def test_tensorflow_runs_its_onednn_kernels_unless_the_environment_says_otherwise(flag, on):
    env = {k: v for k, v in os.environ.items() if k != machine.ONEDNN}
    env.update({} if flag is None else {machine.ONEDNN: flag})
    code = f"from cytoops import machine; machine.import_tensorflow(); {ONEDNN_ON}"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == str(on)
