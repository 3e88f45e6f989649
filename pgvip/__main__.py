"""Allow `python -m pgvip`."""

from pgvip.cli import main

main()
