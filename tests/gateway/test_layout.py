"""The gateway is just another client: it imports schemas and streamer, never the services or torch."""

from __future__ import annotations

import subprocess
import sys

from tests.layout.test_package_graph import ROOT, outside


def test_gateway_imports_only_the_client_side_packages():
    assert outside("gateway", {"lorastream", "schemas", "streamer"}) == {}


def test_no_service_imports_the_gateway():
    from tests.layout.test_package_graph import imports_of

    for package in ("lorastream", "schemas", "streamer", "consumers", "gpu_engine"):
        assert "gateway" not in imports_of(package), package


def test_importing_the_gateway_and_its_command_loads_no_torch():
    code = "import sys, gateway, gateway.server, cli.gateway_commands; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
