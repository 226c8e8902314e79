"""The training consumer: training requests from Kafka in, job subprocesses, adapters announced (see worker.py)."""
