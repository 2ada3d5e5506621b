"""Peer-to-peer endpoints across sites: the daemon, its relay, its configuration."""
