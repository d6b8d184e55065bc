"""The example workflows of `example_workflows/`: their description (`graphs`), API format (`api`) and the
build that writes them with the real front-end (`build`, run as `python -m xdyna_tools.examples`)."""
