"""tritonclient messages pickle across processes only after pb_aliases.install()."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rayfront.protocol import pb_aliases

_MAKE = """
import pickle, sys
from tritonclient.grpc import model_config_pb2, service_pb2
{install}
msg = service_pb2.ModelInferRequest(model_name="digits", raw_input_contents=[b"\\x00\\x01"])
msg.inputs.add(name="pixels", datatype="FP32", shape=[1, 2])
cfg = model_config_pb2.ModelConfig(name="digits", max_batch_size=8)
sys.stdout.buffer.write(pickle.dumps((msg, cfg)))
"""

_LOAD = """
import pickle, sys
{install}
msg, cfg = pickle.loads(sys.stdin.buffer.read())
print(msg.model_name, msg.inputs[0].name, cfg.max_batch_size)
"""

_INSTALL = "from rayfront.protocol import pb_aliases; pb_aliases.install()"


def _run(code: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], input=stdin, capture_output=True, timeout=60
    )


@pytest.fixture(scope="module")
def pickled() -> bytes:
    made = _run(_MAKE.format(install=_INSTALL))
    assert made.returncode == 0, made.stderr.decode()
    return made.stdout


def test_pb_aliases_unpickle_in_fresh_process_when_installed(pickled):
    loaded = _run(_LOAD.format(install=_INSTALL), pickled)
    assert loaded.returncode == 0, loaded.stderr.decode()
    assert loaded.stdout.decode().split() == ["digits", "pixels", "8"]


def test_pb_aliases_unpickle_fails_in_fresh_process_when_not_installed(pickled):
    loaded = _run(_LOAD.format(install="import tritonclient.grpc"), pickled)
    assert loaded.returncode != 0
    assert "No module named 'grpc_service_pb2'" in loaded.stderr.decode()


def test_pb_aliases_pickle_fails_when_not_installed():
    made = _run(_MAKE.format(install=""))
    assert made.returncode != 0
    assert "grpc_service_pb2" in made.stderr.decode()


def test_pb_aliases_install_is_idempotent_and_explicit():
    # Importing the module must not register anything (no import-time side effects).
    fresh = _run(
        "import sys; from rayfront.protocol import pb_aliases; print('grpc_service_pb2' in sys.modules)"
    )
    assert fresh.stdout.decode().strip() == "False"
    pb_aliases.install()
    pb_aliases.install()
    assert pb_aliases.installed()
