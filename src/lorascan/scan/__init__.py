"""The scan (design.md "The scan"): inputs -> one ScanContext per adapter -> detectors -> verdict."""
