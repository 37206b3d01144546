"""`python -m helios_cli`: the `helios-engine` command without its installed script."""

from helios_cli.main import main

main()
