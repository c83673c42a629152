"""One module per `plan` subcommand: ``add_parser(subparsers)`` registers it, ``run(args)`` runs it."""
