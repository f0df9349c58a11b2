"""Allow `python -m connector_sync`."""

from connector_sync.cli import main

main()
