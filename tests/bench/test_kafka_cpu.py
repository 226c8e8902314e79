"""The Kafka benchmark's CPU accounting: per process and for the serving loop's thread alone."""

from __future__ import annotations

import os
import threading
import time

import pytest

from bench.cpu_time import CpuMeter, threads_cpu_s
from bench.kafka_results import kafka_cpu_us_per_token
from bench.kafka_workload import INPROCESS, KAFKA


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_thread_meter_sees_only_its_thread():
    pid, tid = os.getpid(), threading.get_native_id()
    busy = threading.Thread(target=burn, args=(0.3,))
    meter = CpuMeter({"process": pid, "this_thread": (pid, tid), "none": None})
    busy.start()
    busy.join()
    used = meter.used_s()
    assert set(used) == {"process", "this_thread"}
    assert used["process"] >= 0.25  # the other thread's work counts for the process…
    assert used["this_thread"] < 0.1  # …not for this thread, which only waited


def test_extra_cpu_per_token_keeps_the_loop_thread_out_of_the_total():
    paths = {
        KAFKA: {"cpu_s_per_round_median": {"serving": 3.0, "client": 0.5, "broker": 1.0, "serving_loop": 0.3}},
        INPROCESS: {"cpu_s_per_round_median": {"serving": 2.0, "client": 0.0, "broker": 0.5, "serving_loop": 0.1}},
    }
    extra = kafka_cpu_us_per_token(paths, tokens_per_round=1000)
    assert extra == pytest.approx(
        {"serving": 1000.0, "client": 500.0, "broker": 500.0, "serving_loop": 200.0, "total": 2000.0}
    )


def test_serving_splits_into_loop_engine_and_other_threads():
    paths = {
        KAFKA: {"cpu_s_per_round_median": {"serving": 3.0, "client": 0.5, "broker": 1.0,
                                           "serving_loop": 0.3, "serving_engine": 1.8}},
        INPROCESS: {"cpu_s_per_round_median": {"serving": 2.0, "client": 0.0, "broker": 0.5,
                                               "serving_loop": 0.1, "serving_engine": 1.5}},
    }
    extra = kafka_cpu_us_per_token(paths, tokens_per_round=1000)
    assert extra["serving_engine"] == pytest.approx(300.0)
    assert extra["serving_other"] == pytest.approx(1000.0 - 200.0 - 300.0)  # serving − loop − engine
    assert extra["total"] == pytest.approx(2000.0)  # the parts are not added again


def test_threads_cpu_names_every_thread_of_the_process():
    busy = threading.Thread(target=burn, args=(0.2,), name="burner")
    busy.start()
    used = threads_cpu_s(os.getpid())
    busy.join()
    assert f"{threading.current_thread().name[:15]}/{threading.get_native_id()}" in used or any(
        key.endswith(f"/{threading.get_native_id()}") for key in used
    )
    assert any(key.endswith(f"/{busy.native_id}") for key in used)
