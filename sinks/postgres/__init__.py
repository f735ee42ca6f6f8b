"""The PostgreSQL (and, later, TimescaleDB) sink."""
