"""libp2p host, GossipSub, DHT service discovery and request/response."""


class P2PError(Exception):
    """Root of the errors that the p2p package raises."""
