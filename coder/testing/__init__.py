"""What coder's tests, examples and benches share to drive coder without a model: the
scripted OpenAI-compatible server (`scripted`, also `python -m coder.testing.scripted`) and
the harness that runs it in a thread and solves an example repository with it (`harness`).
Nothing of coder itself imports this package."""
