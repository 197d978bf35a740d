"""Build hook: regenerate the gRPC code from proto/ before packaging."""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithProto(build_py):
    def run(self) -> None:
        path = Path(__file__).parent / "proto" / "build_proto.py"
        spec = importlib.util.spec_from_file_location("build_proto", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.generate()
        super().run()


setup(cmdclass={"build_py": BuildWithProto})
