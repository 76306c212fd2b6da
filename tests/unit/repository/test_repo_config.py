"""config.pbtxt <-> ModelSpec through Triton's ModelConfig protobuf."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from repo_helpers import make_spec
from tritonclient.grpc import model_config_pb2

from rayfront.dtypes import DATATYPES
from rayfront.errors import InvalidArgumentError, RepositoryError
from rayfront.repository.pbtxt import (
    parse_config,
    proto_to_spec,
    read_config,
    render_config,
    spec_to_proto,
)
from rayfront.spec import (
    DynamicBatching,
    InstanceGroup,
    ModelSpec,
    QueuePolicy,
    TensorSpec,
    VersionPolicy,
)


def _round_trips(spec: ModelSpec) -> None:
    assert proto_to_spec(spec_to_proto(spec)) == spec
    assert parse_config(render_config(spec), source="mem") == spec


@pytest.mark.parametrize("datatype", DATATYPES)
def test_config_round_trips_when_tensor_has_each_datatype(datatype: str) -> None:
    spec = make_spec(
        inputs=(TensorSpec(name="in", datatype=datatype, dims=(-1, 4)),),
        outputs=(TensorSpec(name="out", datatype=datatype, dims=(2,)),),
    )
    _round_trips(spec)
    enum = model_config_pb2.DataType.Name(spec_to_proto(spec).input[0].data_type)
    assert enum == ("TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}")


def test_config_round_trips_when_dims_are_dynamic_and_model_does_not_batch() -> None:
    spec = make_spec(
        max_batch_size=0,
        dynamic_batching=None,
        inputs=(
            TensorSpec(name="ids", datatype="INT64", dims=(-1, -1)),
            TensorSpec(name="mask", datatype="INT64", dims=(-1, -1), optional=True),
        ),
        outputs=(TensorSpec(name="emb", datatype="FP32", dims=(-1, 384)),),
    )
    _round_trips(spec)
    text = render_config(spec)
    assert "dims: [-1, -1]" in text
    assert "optional: true" in text
    assert "dynamic_batching" not in text


def test_config_round_trips_when_every_batching_field_is_set() -> None:
    spec = make_spec(
        max_batch_size=64,
        dynamic_batching=DynamicBatching(
            preferred_batch_size=(8, 16, 32),
            max_queue_delay_microseconds=2500,
            preserve_ordering=True,
            priority_levels=3,
            default_priority_level=2,
            default_queue_policy=QueuePolicy(
                default_timeout_microseconds=50_000,
                allow_timeout_override=False,
                max_queue_size=128,
            ),
        ),
    )
    _round_trips(spec)
    db = spec_to_proto(spec).dynamic_batching
    assert list(db.preferred_batch_size) == [8, 16, 32]
    assert db.default_queue_policy.max_queue_size == 128
    assert db.default_queue_policy.allow_timeout_override is False


def test_config_round_trips_when_dynamic_batching_has_only_defaults() -> None:
    spec = make_spec(dynamic_batching=DynamicBatching())
    _round_trips(spec)
    assert spec_to_proto(spec).HasField("dynamic_batching")


@pytest.mark.parametrize(
    "groups",
    [
        (InstanceGroup(kind="KIND_CPU", count=4),),
        (InstanceGroup(kind="KIND_GPU", count=2, gpus=(0, 1)),),
        (InstanceGroup(kind="KIND_AUTO"), InstanceGroup(kind="KIND_MODEL", count=3)),
    ],
    ids=["kind-cpu", "kind-gpu", "kind-auto-and-model"],
)
def test_config_round_trips_when_instance_groups_vary(groups: tuple[InstanceGroup, ...]) -> None:
    _round_trips(make_spec(instance_groups=groups))


@pytest.mark.parametrize(
    "policy",
    [
        VersionPolicy(kind="latest", num_versions=3),
        VersionPolicy(kind="all"),
        VersionPolicy(kind="specific", versions=(1, 3)),
    ],
    ids=["latest", "all", "specific"],
)
def test_config_round_trips_when_version_policy_varies(policy: VersionPolicy) -> None:
    _round_trips(make_spec(version_policy=policy))
    assert spec_to_proto(make_spec(version_policy=policy)).version_policy.WhichOneof(
        "policy_choice"
    ) == (policy.kind)


def test_config_round_trips_when_parameters_backend_and_filename_are_set() -> None:
    spec = make_spec(
        platform="tensorrt_plan",
        backend="tensorrt",
        parameters={"intra_op_thread_count": "2", "autoscaling.max_replicas": "4"},
        default_model_filename="resnet.plan",
    )
    _round_trips(spec)
    cfg = spec_to_proto(spec)
    assert cfg.parameters["intra_op_thread_count"].string_value == "2"
    assert cfg.default_model_filename == "resnet.plan"


def test_render_config_writes_text_triton_parses_back_into_the_same_proto() -> None:
    spec = make_spec()
    parsed = text_format.Parse(render_config(spec), model_config_pb2.ModelConfig())
    assert parsed == spec_to_proto(spec)


def test_spec_to_proto_refuses_optional_output_when_protobuf_cannot_express_it() -> None:
    spec = make_spec(outputs=(TensorSpec(name="y", datatype="FP32", dims=(3,), optional=True),))
    with pytest.raises(
        InvalidArgumentError, match="output 'y' of model 'm': outputs cannot be optional"
    ):
        spec_to_proto(spec)


STOCK_DENSENET = """
name: "densenet_onnx"
platform: "onnxruntime_onnx"
max_batch_size : 0
input [
  {
    name: "data_0"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
    reshape { shape: [ 1, 3, 224, 224 ] }
  }
]
output [
  {
    name: "fc6_1"
    data_type: TYPE_FP32
    dims: [ 1000 ]
    reshape { shape: [ 1, 1000, 1, 1 ] }
    label_filename: "densenet_labels.txt"
  }
]
"""

STOCK_DYNAMIC = """
# hand-written, as in Triton's model configuration docs
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  {
    name: "INPUT0"
    data_type: TYPE_FP32
    dims: [ -1, 3 ]
  }
]
output [
  {
    name: "OUTPUT0"
    data_type: TYPE_STRING
    dims: [ 1 ]
  }
]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
}
instance_group [
  {
    count: 2
    kind: KIND_CPU
  }
]
version_policy: { specific: { versions: [ 1, 3 ] } }
"""


def test_parse_config_reads_stock_triton_example_when_it_uses_reshape_and_labels() -> None:
    spec = parse_config(STOCK_DENSENET, source="densenet_onnx/config.pbtxt")
    assert spec.name == "densenet_onnx"
    assert spec.max_batch_size == 0
    assert spec.inputs == (TensorSpec(name="data_0", datatype="FP32", dims=(3, 224, 224)),)
    assert spec.outputs[0].dims == (1000,)
    assert spec.model_filename == "model.onnx"


def test_read_config_takes_folder_name_when_hand_written_config_has_no_name(tmp_path: Path) -> None:
    model_dir = tmp_path / "simple"
    model_dir.mkdir()
    (model_dir / "config.pbtxt").write_text(STOCK_DYNAMIC)
    spec = read_config(model_dir)
    assert spec.name == "simple"
    assert spec.inputs[0].dims == (-1, 3)
    assert spec.outputs[0].datatype == "BYTES"
    assert spec.dynamic_batching is not None
    assert spec.dynamic_batching.preferred_batch_size == (4, 8)
    # Without an explicit queue policy rayfront's defaults apply.
    assert spec.dynamic_batching.default_queue_policy == QueuePolicy()
    assert spec.instance_groups == (InstanceGroup(kind="KIND_CPU", count=2),)
    assert spec.version_policy == VersionPolicy(kind="specific", versions=(1, 3))


def test_parse_config_fills_platform_when_config_names_only_the_backend() -> None:
    text = 'name: "b" backend: "onnxruntime" max_batch_size: 4 ' + (
        'input { name: "x" data_type: TYPE_INT32 dims: [2] } '
        'output { name: "y" data_type: TYPE_INT32 dims: [2] }'
    )
    spec = parse_config(text, source="b/config.pbtxt")
    assert (spec.platform, spec.backend) == ("onnxruntime_onnx", "onnxruntime")
    assert spec.instance_groups == (InstanceGroup(),)
    assert spec.version_policy == VersionPolicy()


def test_parse_config_names_file_and_line_when_text_is_not_protobuf() -> None:
    with pytest.raises(
        RepositoryError, match=r"^repo/m/config\.pbtxt: cannot parse model config: 2:"
    ):
        parse_config('name: "m"\nmax_batch_size: [[[', source="repo/m/config.pbtxt")


def test_parse_config_names_unknown_field_when_config_has_a_typo() -> None:
    with pytest.raises(RepositoryError, match=r"m/config\.pbtxt: cannot parse.*max_batchsize"):
        parse_config(
            'name: "m" platform: "onnxruntime_onnx" max_batchsize: 4', source="m/config.pbtxt"
        )


def test_parse_config_names_tensor_when_data_type_is_missing() -> None:
    text = 'name: "m" platform: "onnxruntime_onnx" input { name: "x" dims: [3] }'
    with pytest.raises(
        RepositoryError, match=r"c\.pbtxt: input 'x' of model 'm': data_type is missing"
    ):
        parse_config(text, source="c.pbtxt")


def test_parse_config_names_tensor_when_data_type_is_bf16() -> None:
    text = (
        'name: "m" platform: "onnxruntime_onnx" output { name: "y" data_type: TYPE_BF16 dims: [3] }'
    )
    with pytest.raises(
        RepositoryError, match="output 'y' of model 'm': data_type TYPE_BF16 is not supported"
    ):
        parse_config(text, source="c.pbtxt")


def test_parse_config_names_tensor_when_dims_contain_zero() -> None:
    text = 'name: "m" platform: "onnxruntime_onnx" input { name: "x" data_type: TYPE_FP32 dims: [0, 3] }'
    with pytest.raises(RepositoryError, match=r"input 'x' of model 'm': dims: .*positive or -1"):
        parse_config(text, source="c.pbtxt")


def test_parse_config_fails_when_neither_platform_nor_backend_is_set() -> None:
    with pytest.raises(
        RepositoryError, match="model 'm': config names neither `platform` nor `backend`"
    ):
        parse_config('name: "m"', source="c.pbtxt")


def test_read_config_fails_when_config_name_differs_from_folder(tmp_path: Path) -> None:
    model_dir = tmp_path / "folder"
    model_dir.mkdir()
    (model_dir / "config.pbtxt").write_text(render_config(make_spec(name="other")))
    with pytest.raises(
        RepositoryError, match="config names the model 'other' but its folder is 'folder'"
    ):
        read_config(model_dir)


def test_read_config_names_path_when_config_is_missing(tmp_path: Path) -> None:
    with pytest.raises(
        RepositoryError, match=r"nothing/config\.pbtxt: model 'nothing' has no config\.pbtxt"
    ):
        read_config(tmp_path / "nothing")
