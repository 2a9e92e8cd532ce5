"""pspsim: a stateful simulator of payment service providers (PSPs) for paystream's tests.

It is an external system on purpose: it imports only the standard library, aiohttp and
standardwebhooks, never paystream's packages. See docs/psp-simulator.md.
"""

__all__: list[str] = []
