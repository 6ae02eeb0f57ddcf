"""The sandbox web: a seeded offline stand-in for the internet (DESIGN.md §7)."""
from explorer.sandbox.server import Sandbox, SandboxServer, serve, start_sandbox
from explorer.sandbox.world import ImageInfo, World

__all__ = ["World", "ImageInfo", "Sandbox", "SandboxServer", "start_sandbox", "serve"]
