"""AI Hub profile reader: the dicts come from the real qai-hub 0.56 client's protobuf → dict conversion
(``qai_hub.client._profile_pb_to_python_dict``, what ``InferenceJob.download_profile()`` calls) applied to
``ProfileDetail`` messages built here for each detail version, since no real ``download_profile()`` dump is public."""

from __future__ import annotations

import json

import pytest

from rethined_bench.errors import RbenchError
from rethined_bench.runners.aihub_profile import (
    Placement,
    UnitShare,
    describe_placement,
    parse_profile,
    placement_summary,
)

api_pb = pytest.importorskip("qai_hub.public_api_pb2", reason="qai-hub is not installed (extra 'qnn')")
client = pytest.importorskip("qai_hub.client")


def converted(detail) -> dict:
    """What download_profile() returns for a successful job whose result holds ``detail``."""
    return client._profile_pb_to_python_dict(detail)


def layer(name: str, unit: int, *, us: int | None = None):
    extra = {} if us is None else {"execution_time": us}
    return api_pb.LayerDetail(name=name, layer_type_name="Conv2d", compute_unit=unit, **extra)


def mixed_layers():
    """3 NPU layers (100, 250, 7 µs), 1 GPU (40 µs), 1 CPU (1003 µs), 1 UNSPECIFIED without execution_time."""
    return [
        layer("conv1", api_pb.COMPUTE_UNIT_NPU, us=100),
        layer("conv2", api_pb.COMPUTE_UNIT_NPU, us=250),
        layer("conv3", api_pb.COMPUTE_UNIT_NPU, us=7),
        layer("resize", api_pb.COMPUTE_UNIT_GPU, us=40),
        layer("fft", api_pb.COMPUTE_UNIT_CPU, us=1003),
        layer("reshape", api_pb.COMPUTE_UNIT_UNSPECIFIED),
    ]


def detail_v1_2():
    """Version 1.2 with the magnitudes of the client's own fixture; the cold-load memory record is not sent."""
    detail = api_pb.ProfileDetail(
        major_version=1, minor_version=2,
        execution_time=3652, after_execution_peak_memory=166711296,
        cold_load_time=1374293, warm_load_time=277823, compile_time=0,
        all_execution_times=[10003, 4205, 5000], all_cold_load_times=[1374293], all_warm_load_times=[277823],
        layer_details=mixed_layers(),
    )
    detail.execution_memory.peak.lower = 2654208
    detail.execution_memory.peak.upper = 39406752
    detail.warm_load_memory.peak.lower = 3 * 2**20 + 2**19
    detail.warm_load_memory.peak.upper = 64 * 2**20
    return detail


def test_v1_2_converts_microseconds_and_bytes():
    raw = converted(detail_v1_2())
    # the client's conversion as this reader relies on it: µs ints, byte tuples, None for an unsent memory record
    summary = raw["execution_summary"]
    assert summary["all_inference_times"] == [10003, 4205, 5000]
    assert summary["inference_memory_peak_range"] == (2654208, 39406752)
    assert summary["first_load_memory_peak_range"] is None
    assert "execution_time" not in raw["execution_detail"][5]

    profile = parse_profile(raw)
    assert profile.samples_ms == (10.003, 4.205, 5.0)
    assert profile.estimated_ms == 3.652
    assert profile.first_load_ms == 1374.293
    assert profile.warm_load_ms == 277.823
    assert profile.compile_ms == 0.0  # ahead-of-time asset: nothing compiled on the device
    assert profile.inference_peak_mib == (2.53125, 37.581207275390625)
    assert profile.warm_load_peak_mib == (3.5, 64.0)
    assert profile.first_load_peak_mib is None


def test_v1_2_placement_counts_layers_and_sums_times():
    placement = parse_profile(converted(detail_v1_2())).placement
    assert placement.units == {
        "NPU": UnitShare(layers=3, time_ms=0.357),
        "GPU": UnitShare(layers=1, time_ms=0.04),
        "CPU": UnitShare(layers=1, time_ms=1.003),
        "UNSPECIFIED": UnitShare(layers=1, time_ms=0.0),  # a layer, but no time: it reported none
    }
    assert placement.layer_count == 6
    assert placement.primary_unit == "NPU"
    assert describe_placement(placement) == "3/6 layers on NPU, 1 on GPU, 1 on CPU, 1 on UNSPECIFIED"


def test_v1_0_has_only_scalars():
    detail = api_pb.ProfileDetail(
        major_version=1, minor_version=0, execution_time=52512, after_execution_peak_memory=551 * 2**20,
        cold_load_time=2_000_000, warm_load_time=150_000, compile_time=1_250_000,
        layer_details=[layer("a", api_pb.COMPUTE_UNIT_GPU), layer("b", api_pb.COMPUTE_UNIT_CPU)],
    )
    raw = converted(detail)
    assert len(raw["execution_summary"]) == 8  # no ranges, no all_* lists before 1.1 / 1.2

    profile = parse_profile(raw)
    assert profile.samples_ms == ()
    assert profile.estimated_ms == 52.512
    assert (profile.first_load_ms, profile.warm_load_ms, profile.compile_ms) == (2000.0, 150.0, 1250.0)
    assert profile.inference_peak_mib is profile.first_load_peak_mib is profile.warm_load_peak_mib is None
    assert profile.primary_unit == "GPU"  # a GPU/CPU tie goes to the GPU
    assert profile.layer_count == 2


def test_legacy_detail_fills_only_three_keys():
    detail = api_pb.ProfileDetail(execution_time=88596, load_time=1_500_000, peak_memory_usage=139215624,
                                  layer_details=[layer("a", api_pb.COMPUTE_UNIT_NPU)])
    raw = converted(detail)
    assert raw["execution_summary"]["compile_peak_memory"] == 139215624  # the client files peak memory there
    assert raw["execution_summary"]["warm_load_time"] is None

    profile = parse_profile(raw)
    assert profile.estimated_ms == 88.596
    assert profile.first_load_ms == 1500.0  # the deprecated load_time
    assert profile.warm_load_ms is profile.compile_ms is None
    assert profile.inference_peak_mib is None
    assert profile.samples_ms == ()
    assert describe_placement(profile.placement) == "1/1 layers on NPU"


def test_unset_scalars_read_missing_not_zero():
    """1.x scalars the server did not set come through as 0; the samples still carry the latency."""
    detail = api_pb.ProfileDetail(major_version=1, minor_version=2, all_execution_times=[40128])
    profile = parse_profile(converted(detail))
    assert profile.samples_ms == (40.128,)
    assert profile.estimated_ms is profile.first_load_ms is profile.warm_load_ms is None
    assert profile.compile_ms == 0.0
    assert profile.primary_unit is None
    assert profile.layer_count == 0
    assert describe_placement(profile.placement) == "no per-layer placement reported"


def test_to_dict_is_json_and_reloaded_json_parses_the_same():
    """download_profile(path) writes the dict as JSON (tuples become lists); both must read alike."""
    raw = converted(detail_v1_2())
    profile = parse_profile(raw)
    stored = profile.to_dict()
    assert json.loads(json.dumps(stored)) == stored
    assert stored["inference_peak_mib"] == [2.53125, 37.581207275390625]
    assert stored["first_load_peak_mib"] is None
    assert stored["placement"]["units"]["CPU"] == {"layers": 1, "time_ms": 1.003}
    assert stored["placement"]["primary_unit"] == "NPU"
    assert parse_profile(json.loads(json.dumps(raw))) == profile


@pytest.mark.parametrize(("counts", "primary"), [
    ({"NPU": 2, "GPU": 2, "CPU": 2}, "NPU"),
    ({"GPU": 2, "CPU": 2}, "GPU"),
    ({"CPU": 2, "UNSPECIFIED": 2}, "CPU"),
    ({"NPU": 1, "CPU": 2}, "CPU"),
])
def test_primary_unit_is_the_most_layers_with_ties_to_npu_then_gpu_then_cpu(counts, primary):
    detail = [{"compute_unit": unit} for unit, n in counts.items() for _ in range(n)]
    assert placement_summary(detail).primary_unit == primary


def test_placement_summary_alone():
    detail = ([{"compute_unit": "NPU", "execution_time": 10}] * 312 + [{"compute_unit": "CPU"}] * 28
              + [{"name": "no unit at all"}])
    placement = placement_summary(detail)
    assert isinstance(placement, Placement)
    assert placement.units["NPU"] == UnitShare(layers=312, time_ms=3.12)
    assert placement.units["UNSPECIFIED"].layers == 1
    assert describe_placement(placement_summary(detail[:-1])) == "312/340 layers on NPU, 28 on CPU"
    assert placement_summary(None).layer_count == 0


def test_empty_profile_is_an_error():
    """The client returns {} for a failed job or a result without detail."""
    with pytest.raises(RbenchError, match="empty profile: the job failed"):
        parse_profile({})


def test_profile_without_latency_is_an_error():
    raw = converted(api_pb.ProfileDetail(major_version=1, minor_version=0,
                                         layer_details=[layer("a", api_pb.COMPUTE_UNIT_NPU, us=5)]))
    with pytest.raises(RbenchError, match="no inference latency"):
        parse_profile(raw)


def test_a_saved_file_path_is_not_a_profile():
    """download_profile(filename) returns the path it wrote, not the dict."""
    with pytest.raises(RbenchError, match="got str"):
        parse_profile("job_results.json")  # type: ignore[arg-type]
