"""asyncio client for the uip-realtime gateway.

One multiplexed ``/ws`` connection that survives drops: every reconnect
resubscribes each channel with ``since`` = the last ``seq`` handed to the
application, so it sees every event once and in order; a gap history no longer
holds is handed over as a fresh snapshot, never silently.
"""

from .client import Backoff, Client, ConnectionState, Subscription, UipError, backoff_delay

__all__ = ["Backoff", "Client", "ConnectionState", "Subscription", "UipError", "backoff_delay"]
