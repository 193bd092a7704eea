"""One module per ``poolscope`` subcommand: ``add_parser(parser)`` and ``run(args)``."""
