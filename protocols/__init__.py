"""Sans-I/O wire codecs for the protocols Airlock speaks: no sockets, no asyncio."""
