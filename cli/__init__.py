"""The `lorastream` command line: one sub-command per thing a person does (serve, send, train, demo, ...)."""
