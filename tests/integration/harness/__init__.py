"""Integration-test harness: real PostgreSQL servers, a tandem process, raw wire helpers."""
