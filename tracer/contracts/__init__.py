"""Contracts: AsyncAPI documents held against the running system (docs/contracts.md)."""
