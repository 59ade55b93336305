"""The session core: the sans-I/O session machine, its asyncio adapter (the gated
session), the channels, listeners and classifier pool both protocols share."""
