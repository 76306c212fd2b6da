"""Triton's system shared-memory extension, through unmodified tritonclient over HTTP and gRPC.

The servers are the real HTTP and gRPC front ends over the fake data plane (conftest);
the regions are real POSIX shared memory made by ``tritonclient.utils.shared_memory``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from rayfront.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from rayfront.protocol.shared_memory import SharedMemoryRegistry

NBYTES = 4 * 4 * 4  # FP32 [4, 4]


@pytest.fixture
def clients(servers):
    return {
        "http": httpclient.InferenceServerClient(servers.http_url),
        "grpc": grpcclient.InferenceServerClient(servers.grpc_url),
    }


@pytest.fixture
def regions():
    """Input and output regions, created as a client would; cleaned up afterwards."""
    tag = f"{os.getpid()}_{os.urandom(3).hex()}"
    made = {
        "in": shm.create_shared_memory_region(f"in_{tag}", f"/rf_in_{tag}", 2 * NBYTES),
        "out": shm.create_shared_memory_region(f"out_{tag}", f"/rf_out_{tag}", 2 * NBYTES),
    }
    yield tag, made
    for handle in made.values():
        shm.destroy_shared_memory_region(handle)


def _mod(protocol: str):
    return httpclient if protocol == "http" else grpcclient


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_infer_reads_inputs_and_writes_outputs_in_shared_memory_when_regions_registered(
    clients, regions, protocol
):
    client, mod = clients[protocol], _mod(protocol)
    tag, made = regions
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    b = np.full((4, 4), 10.0, np.float32)
    shm.set_shared_memory_region(made["in"], [a, b])
    client.unregister_system_shared_memory()
    client.register_system_shared_memory(f"in_{tag}", f"/rf_in_{tag}", 2 * NBYTES)
    client.register_system_shared_memory(f"out_{tag}", f"/rf_out_{tag}", 2 * NBYTES)

    inputs = [mod.InferInput("INPUT0", [4, 4], "FP32"), mod.InferInput("INPUT1", [4, 4], "FP32")]
    inputs[0].set_shared_memory(f"in_{tag}", NBYTES)
    inputs[1].set_shared_memory(f"in_{tag}", NBYTES, offset=NBYTES)
    outputs = [mod.InferRequestedOutput("OUTPUT0"), mod.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory(f"out_{tag}", NBYTES)
    outputs[1].set_shared_memory(f"out_{tag}", NBYTES, offset=NBYTES)
    result = client.infer("add", inputs, outputs=outputs)

    out0 = result.get_output("OUTPUT0")
    shape = out0["shape"] if protocol == "http" else list(out0.shape)
    got_sum = shm.get_contents_as_numpy(made["out"], np.float32, shape)
    got_diff = shm.get_contents_as_numpy(made["out"], np.float32, shape, offset=NBYTES)
    np.testing.assert_array_equal(got_sum, a + b)
    np.testing.assert_array_equal(got_diff, a - b)
    status = client.get_system_shared_memory_status()
    names = {r["name"] for r in status} if protocol == "http" else set(status.regions)
    assert names == {f"in_{tag}", f"out_{tag}"}
    client.unregister_system_shared_memory(f"in_{tag}")
    client.unregister_system_shared_memory()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_region_registered_on_one_protocol_is_usable_on_the_other_when_shared(
    clients, regions, protocol
):
    """The registry is per host, not per connection or process."""
    other = "grpc" if protocol == "http" else "http"
    tag, made = regions
    x = np.ones((4, 4), np.float32)
    shm.set_shared_memory_region(made["in"], [x, x])
    clients[protocol].unregister_system_shared_memory()
    clients[protocol].register_system_shared_memory(f"in_{tag}", f"/rf_in_{tag}", 2 * NBYTES)
    mod = _mod(other)
    inputs = [mod.InferInput("INPUT0", [4, 4], "FP32"), mod.InferInput("INPUT1", [4, 4], "FP32")]
    inputs[0].set_shared_memory(f"in_{tag}", NBYTES)
    inputs[1].set_shared_memory(f"in_{tag}", NBYTES, offset=NBYTES)
    result = clients[other].infer("add", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x + x)
    clients[other].unregister_system_shared_memory()


def _status_code(exc: InferenceServerException) -> str:
    return str(exc.status())


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("unknown_region", "Unable to find system shared memory region: 'nowhere'"),
        ("offset_past_end", "Invalid offset + byte size for shared memory region"),
        (
            "size_mismatch",
            "shared_memory_byte_size 32 in region 'in_{tag}' does not match FP32[4, 4]",
        ),
    ],
)
def test_infer_refuses_bad_region_use_naming_the_region_when_request_is_wrong(
    clients, regions, protocol, setup, message
):
    client, mod = clients[protocol], _mod(protocol)
    tag, _ = regions
    client.unregister_system_shared_memory()
    client.register_system_shared_memory(f"in_{tag}", f"/rf_in_{tag}", 2 * NBYTES)
    inputs = [mod.InferInput("INPUT0", [4, 4], "FP32"), mod.InferInput("INPUT1", [4, 4], "FP32")]
    region, size, offset = f"in_{tag}", NBYTES, 0
    if setup == "unknown_region":
        region = "nowhere"
    elif setup == "offset_past_end":
        offset = 2 * NBYTES - 8
    else:
        size = 32
    inputs[0].set_shared_memory(region, size, offset=offset)
    inputs[1].set_shared_memory(f"in_{tag}", NBYTES)
    with pytest.raises(InferenceServerException) as info:
        client.infer("add", inputs)
    assert message.format(tag=tag) in str(info.value)
    assert _status_code(info.value) in ("400", "StatusCode.INVALID_ARGUMENT")
    client.unregister_system_shared_memory()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize(
    ("key", "offset", "size", "message"),
    [
        ("/does_not_exist_rf", 0, 16, "unable to open shared memory region"),
        ("../../etc/passwd", 0, 16, "must name one object under /dev/shm"),
        ("/a/b", 0, 16, "must name one object under /dev/shm"),
        (None, 0, 10**9, "runs past the end of"),
    ],
)
def test_register_refuses_bad_key_or_bounds_when_asked(
    clients, regions, protocol, key, offset, size, message
):
    client = clients[protocol]
    tag, _ = regions
    key = key or f"/rf_in_{tag}"
    with pytest.raises(InferenceServerException) as info:
        client.register_system_shared_memory(f"bad_{tag}", key, size, offset=offset)
    assert message in str(info.value)
    assert _status_code(info.value) in ("400", "StatusCode.INVALID_ARGUMENT")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_server_survives_a_client_that_truncates_its_region_mid_flight(clients, regions, protocol):
    client, mod = clients[protocol], _mod(protocol)
    tag, _ = regions
    client.unregister_system_shared_memory()
    client.register_system_shared_memory(f"in_{tag}", f"/rf_in_{tag}", 2 * NBYTES)
    os.truncate(f"/dev/shm/rf_in_{tag}", 8)  # the owner shrinks it after registering
    inputs = [mod.InferInput("INPUT0", [4, 4], "FP32"), mod.InferInput("INPUT1", [4, 4], "FP32")]
    inputs[0].set_shared_memory(f"in_{tag}", NBYTES)
    inputs[1].set_shared_memory(f"in_{tag}", NBYTES, offset=NBYTES)
    with pytest.raises(InferenceServerException) as info:
        client.infer("add", inputs)
    assert "the region shrank or was removed" in str(info.value)
    # Still live and correct for a well-behaved request.
    a = mod.InferInput("INPUT0", [1, 4], "FP32")
    a.set_data_from_numpy(np.ones((1, 4), np.float32))
    b = mod.InferInput("INPUT1", [1, 4], "FP32")
    b.set_data_from_numpy(np.ones((1, 4), np.float32))
    np.testing.assert_array_equal(
        client.infer("add", [a, b]).as_numpy("OUTPUT0"), np.full((1, 4), 2.0)
    )
    client.unregister_system_shared_memory()


# --- the registry itself --------------------------------------------------------------------


@pytest.fixture
def region_file():
    path = f"/dev/shm/rf_unit_{os.getpid()}_{os.urandom(3).hex()}"
    with open(path, "wb") as f:
        f.write(np.arange(64, dtype=np.float32).tobytes())
    yield path
    if os.path.exists(path):
        os.unlink(path)


def test_registry_shares_registrations_between_processes_when_they_use_one_directory(
    tmp_path: Path, region_file: str
):
    key = "/" + os.path.basename(region_file)
    first = SharedMemoryRegistry(tmp_path / "reg")
    second = SharedMemoryRegistry(tmp_path / "reg")  # another ingress process on this host
    first.register("r", key, 0, 256)
    tensor = second.input_tensor("r", 16, 16, "FP32", (4,), tensor="x", model="m")
    np.testing.assert_array_equal(tensor.numpy(), [4, 5, 6, 7])
    with pytest.raises(AlreadyExistsError, match="'r' already in manager"):
        second.register("r", key, 0, 16)
    second.unregister("r")
    with pytest.raises(
        InvalidArgumentError, match="Unable to find system shared memory region: 'r'"
    ):
        first.input_tensor("r", 0, 16, "FP32", (4,), tensor="x", model="m")
    with pytest.raises(NotFoundError):
        first.status("r")


def test_registry_refuses_a_region_replaced_after_registration(tmp_path: Path, region_file: str):
    key = "/" + os.path.basename(region_file)
    writer = SharedMemoryRegistry(tmp_path / "reg")
    reader = SharedMemoryRegistry(tmp_path / "reg")
    writer.register("r", key, 0, 256)
    os.unlink(region_file)
    with open(region_file, "wb") as f:  # a different object under the same key
        f.write(b"\0" * 256)
    with pytest.raises(InvalidArgumentError, match="was replaced since it was registered"):
        reader.input_tensor("r", 0, 16, "FP32", (4,), tensor="x", model="m")


def test_registry_writes_output_within_the_region_only(tmp_path: Path, region_file: str):
    key = "/" + os.path.basename(region_file)
    reg = SharedMemoryRegistry(tmp_path / "reg")
    reg.register("r", key, 16, 32)
    assert reg.write_output("r", 8, 8, np.array([7.0, 9.0], np.float32), tensor="y", model="m") == 8
    data = np.fromfile(region_file, dtype=np.float32)
    np.testing.assert_array_equal(data[6:8], [7.0, 9.0])  # 16 + 8 bytes in
    with pytest.raises(InvalidArgumentError, match="do not fit the 4 bytes"):
        reg.write_output("r", 0, 4, np.zeros(2, np.float32), tensor="y", model="m")
    with pytest.raises(InvalidArgumentError, match="Invalid offset \\+ byte size"):
        reg.write_output("r", 30, 8, np.zeros(2, np.float32), tensor="y", model="m")


def test_registry_refuses_a_directory_others_can_enter(tmp_path: Path):
    shared = tmp_path / "reg"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    with pytest.raises(InvalidArgumentError, match="not a private \\(0700\\) directory"):
        SharedMemoryRegistry(shared)
