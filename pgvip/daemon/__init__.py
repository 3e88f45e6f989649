"""Wire: the asyncio daemon that connects observe, decide, elect and apply."""
