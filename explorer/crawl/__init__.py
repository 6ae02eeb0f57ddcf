"""Fetching, checking and storing images: downloads under the address guard, the image pipeline
(in worker processes), the near-duplicate and test-leak checks, the store. Imports no other stage."""
