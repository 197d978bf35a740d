"""The checked-in generated code must be what the build generates now."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location("build_proto", ROOT / "proto" / "build_proto.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_current(tmp_path):
    generated = _generator().generate(tmp_path)
    assert len(generated) == 3
    for path in generated:
        checked_in = ROOT / "proto" / path.relative_to(tmp_path)
        assert checked_in.exists(), f"{checked_in} is missing: run python proto/build_proto.py"
        assert checked_in.read_bytes() == path.read_bytes(), (
            f"{checked_in} is stale: run python proto/build_proto.py and commit the result")


def test_contract_names():
    from placement.v1 import placement_pb2 as pb

    services = pb.DESCRIPTOR.services_by_name
    assert pb.DESCRIPTOR.package == "placement.v1"
    assert set(services["PlacementService"].methods_by_name) == {"Decide", "DecideStream", "Reward", "Activate"}
    stream = services["PlacementService"].methods_by_name["DecideStream"]
    assert stream.client_streaming and stream.server_streaming
    admin = set(services["PlacementAdmin"].methods_by_name)
    assert {"PutCollections", "ListCollections", "DeleteCollection", "GetModelInfo", "ExportModel",
            "ImportModel", "RollbackModel", "GetStats"} <= admin
