"""Detector for Azure VM Run Command executed during a suspicious (UEBA) login window.

The package is a pure core (rule, KQL semantics, correlation, allowlist) with thin adapters
(export files, Log Analytics, Table Storage, webhooks). Nothing in the core imports azure-*.
"""

__version__ = "0.1.0"
