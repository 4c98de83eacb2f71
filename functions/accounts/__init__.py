"""Users and their API keys: one store (store.py) behind the gateway's /admin API and the `vexa admin` CLI."""
