"""poolscope's benchmarks: ``python -m bench [--quick] [--only NAME ...]`` (see __main__)."""
