"""Emulators of remote services on 127.0.0.1, speaking the real protocols, for the real clients."""
